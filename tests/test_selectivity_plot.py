"""The selectivity figure shows both ablation costs the page reports: the overall probability drop
(Morcos et al.) and, where measured, the largest per-class accuracy drop (Zhou et al.)."""
import numpy as np
from PIL import Image

from generator.metrics import plots


def _axes_count(path) -> int:
    import re

    return len(re.findall(r'<g id="axes_\d+"', path.read_text()))


def test_the_scatter_has_a_panel_per_cost_it_is_given(tmp_path):
    r = np.random.default_rng(0)
    both = {"a": (r.random(8), r.normal(0, 0.02, 8), r.random(8)), "b": (r.random(8), r.normal(0, 0.02, 8), r.random(8))}
    one = {k: v[:2] for k, v in both.items()}
    two_panels = plots.selectivity_scatter(tmp_path / "both.svg", both, "t")
    one_panel = plots.selectivity_scatter(tmp_path / "one.svg", one, "t")
    assert _axes_count(two_panels) == 2 and _axes_count(one_panel) == 1
    png_two = plots.selectivity_scatter(tmp_path / "both.png", both, "t")
    png_one = plots.selectivity_scatter(tmp_path / "one.png", one, "t")
    assert Image.open(png_two).width > 1.4 * Image.open(png_one).width
