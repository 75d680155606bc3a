"""A small site (one model with weights, one missing, two photos, fast settings) in a temp folder:
the generator's output and its own MkDocs project, as the browser test and the screenshots use it.

    python tests/small_site.py /tmp/folder     # builds /tmp/folder/site
    python tests/small_site.py /tmp/folder https://example.org/site/   # … for that URL (SITE_URL)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ["tabby-cat-chelsea.jpg", "espresso.jpg"]


def small_config(proj: Path, images: Path):
    from generator.config import Config

    cfg = Config.load()
    cfg.override(models=["efficientnet_lite0", "alexnet"], images=str(images), out=str(proj / "site_src/generated"),
                 cache=str(proj / "cache"), offline=True, device="cpu",
                 stages=["overview", "activity", "attribution", "findings", "dgn_am", "atlas", "home"])
    cfg.data["attribution"] = {"methods": ["saliency", "deconvnet", "guided_backprop", "gradcam",
                                           "integrated_gradients"],
                               "gallery_images": 2, "neurons": 2, "neuron_images": 1, "neuron_layers": 1,
                               "method_params": {"integrated_gradients": {"steps": 4}}}
    cfg.data["findings"] = {"images": 2, "sanity_images": 1, "cascade_steps": 2, "accuracy_folder": "",
                            "methods": ["saliency", "gradcam"], "faithfulness_steps": 4,
                            "expensive_images": 1, "faithfulness_images": 2, "invariance_images": 1,
                            "fragility_images": 1, "fragility_steps": 1, "selectivity_images": 2,
                            "ablation_units_per_layer": 1}
    cfg.data["dgn_am"] = {"classes": [281], "steps": 3, "baselines": ["plain"], "ppgn_steps": 2,
                          "ppgn_samples": 2, "units_per_layer": 0}
    cfg.data["atlas"] = {"folder": str(images), "max_channels_per_layer": 2, "top_k": 2, "layers": ["stage3"]}
    return cfg


def build_small_site(folder: Path, say=lambda m: None, site_url: str | None = None) -> Path:
    """Generator + ``mkdocs build --strict`` into ``folder``; returns the built site folder.
    ``site_url``: the URL the site is built for (``SITE_URL``, see mkdocs.yml); None: the host's root."""
    from generator.build import run_build

    folder = Path(folder)
    images = folder / "imgs"
    images.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        shutil.copy(ROOT / "data/images" / name, images / name)
    # the shipped manifest's entries for these photos (titles, credits, licences)
    blocks = (ROOT / "data/images/images.toml").read_text(encoding="utf-8").split("[[image]]")
    (images / "images.toml").write_text("".join("[[image]]" + b for b in blocks[1:]
                                                if any(f'file = "{n}"' in b for n in PHOTOS)), encoding="utf-8")
    proj = folder / "proj"
    if (proj / "site_src").exists():
        for item in (proj / "site_src").iterdir():
            if item.name != "generated":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    shutil.copytree(ROOT / "site_src", proj / "site_src", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("generated"))
    shutil.copy(ROOT / "mkdocs.yml", proj / "mkdocs.yml")
    mathjax = proj / "site_src/assets/mathjax/tex-mml-chtml.js"
    if not mathjax.exists():  # `make site` fetches MathJax; a stub stands in so the loader is still checked
        mathjax.parent.mkdir(parents=True, exist_ok=True)
        mathjax.write_text("window.MathJaxStub = true;\n")
    res = run_build(small_config(proj, images), say=say)
    assert res.exit_code == 1  # built; AlexNet has no weights here (exit 1 says so)
    env = dict(os.environ, DISABLE_MKDOCS_2_WARNING="true", NO_MKDOCS_2_WARNING="true")
    env.pop("SITE_URL", None)
    if site_url:
        env["SITE_URL"] = site_url
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(proj / "mkdocs.yml")],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(r.stdout + r.stderr)
    return proj / "site"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(build_small_site(Path(sys.argv[1]), say=print, site_url=sys.argv[2] if len(sys.argv) > 2 else None))
