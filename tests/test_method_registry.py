"""Adding an attribution method is one class: a toy method registered inside the test shows
up in the galleries, on its own method page and in the findings tables, with no other
module touched."""
from __future__ import annotations

import torch
from test_findings import TINY, _items

from generator.build import BuildContext
from generator.cache import Cache
from generator.config import Config
from generator.methods import attribution as A
from generator.models import REGISTRY, load_model
from generator.site import SiteWriter
from generator.stages import attribution, findings
from generator.util import StageTimer

torch.set_num_threads(1)


class ToyGrad(A.AttributionMethod):
    """The input gradient times a constant, with every optional capability declared."""

    name = "toy_grad"
    title = "Toy gradient"
    short = "Toy"
    paper = "Nobody (2024), A toy for the tests"
    url = "https://example.org/toy"
    summary = "The gradient of the class score, times `scale`."
    formula = r"$$ M = s\,\nabla_x S_c $$"
    defaults = {"scale": 1.0}
    gallery_params = {"scale": 2.0}
    findings_params = {"scale": 3.0}
    signed_view = True
    notes = ('!!! note "Toy note"\n    Only a toy.',)
    self_check = A.SelfCheck(title="Toy check", explanation="The toy promises nothing; its error is 0.",
                             measure="toy_error", setting="scale")

    def _attribute(self, x, target):
        t = self._targets(x, target)
        g, _, _ = A.input_gradient(self.model, x, t)
        return g * float(self.params["scale"])

    def check(self, inputs, target, attribution):
        return {"toy_error": torch.zeros(len(inputs))}


def test_a_registered_method_appears_everywhere(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "tiny_test", TINY)
    monkeypatch.setitem(A.ATTRIBUTION_METHODS, ToyGrad.name, ToyGrad)  # what @register does; undone after the test
    model = load_model(TINY, allow_random=True, seed=0)  # stands in for a trained model (test only)
    methods = ["saliency", "toy_grad"]
    cfg = Config({"build": {"models": ["tiny_test"], "stages": ["attribution", "findings"]},
                  "attribution": {"methods": methods, "gallery_images": 2, "neurons": 0},
                  "findings": {"methods": methods, "images": 2, "sanity_images": 1, "cascade_steps": 2,
                               "faithfulness_steps": 3, "thumb": 16, "accuracy_folder": ""}})
    # by default every registered method is shown, the toy included
    assert "toy_grad" in attribution.settings(Config({}))["methods"]
    assert findings.settings(Config({}))["method_params"]["toy_grad"] == {"scale": 3.0}
    out = tmp_path / "out"
    ctx = BuildContext(config=cfg, models=[model], missing={}, images=_items(2), skipped=[], notes=[],
                       cache=Cache(tmp_path / "cache"), site=SiteWriter(out), device=torch.device("cpu"),
                       batch_size=4, timer=StageTimer(), out=out)
    attribution.run(ctx)
    findings.run(ctx)
    ctx.site.finish()

    # galleries: a column on the model page and on each image page, with its pictures
    model_page = (out / "models" / "tiny_test.md").read_text()
    assert "[Toy](../methods/toy_grad.md)" in model_page and "attribution/tiny_test/toy_grad/photo-0.webp" in model_page
    assert "[Toy](../methods/toy_grad.md)" in (out / "images" / "photo-1.md").read_text()
    figures = out / "figures" / "attribution" / "tiny_test" / "toy_grad"
    shown = {"photo-0.webp", "photo-1.webp", "photo-0-rgb.webp", "photo-1-rgb.webp"}
    assert {p.name for p in figures.iterdir()} == shown  # gallery tiles sit in table cells: no PNG download twin
    # its own page: text, settings, note, signed view, self-check, findings section
    page = (out / "methods" / "toy_grad.md").read_text()
    assert page.startswith("# Toy gradient")
    for text in ("The gradient of the class score, times `scale`.", "`scale = 2.0`", '!!! note "Toy note"',
                 "### As images", "toy_grad/photo-1-rgb.webp", "### Toy check", "The toy promises nothing",
                 "| Model | Scale | Mean | Median | Max | Images |", "| Tiny test net | 2.0 | 0.00 % | 0.00 % | 0.00 % | 2 |",
                 "Sanity checks and faithfulness (measured)"):
        assert text in page, text
    assert "Grad-CAM layer" not in page and "Does the map depend on the image?" not in page
    # the findings tables list it, computed with its findings settings
    index = (out / "findings" / "index.md").read_text()
    assert "[Toy gradient](../methods/toy_grad.md)" in index
    assert "Toy gradient: `scale = 3.0`" in index
    section = (out / "findings" / "randomisation.md").read_text().split("\n## How these numbers")[0]
    tables = [t for t in section.split("\n\n") if t.lstrip().startswith("|")]
    first = [line for line in tables[0].splitlines() if line.startswith("| [")]  # the |map| table
    assert [line.split("]")[0][3:] for line in first] == ["Saliency (gradient)", "Toy gradient"]
    assert (out / "figures" / "findings" / "tiny_test" / "sanity-toy_grad.svg").is_file()
