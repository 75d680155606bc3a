"""Figures legible at the size shown (issue #13): the unit histogram has labelled axes, the
single-neuron figure's labels never touch and stay ≥ 11 px where it is shown, and the DGN-AM
hidden-unit claim is computed from the numbers."""
from __future__ import annotations

import re

import pytest
import torch

from generator.render import _nice_ticks, histogram_svg, neuron_figure
from generator.site import make_env
from generator.deepsim import UNREACHED, unit_note, units_claim


def test_histogram_has_labelled_axes_and_is_deterministic():
    counts = torch.zeros(64, dtype=torch.long)
    counts[20:30] = torch.tensor([1, 4, 9, 30, 55, 40, 20, 8, 2, 1])
    edges = torch.linspace(-2.0, 14.0, 65)
    svg, lo, hi = histogram_svg(counts, edges)
    assert (lo, hi) == (3.0, 5.5)
    assert "maximum activation per photo" in svg and ">photos<" in svg
    xt = [float(t) for t in re.findall(r'text-anchor="middle">([-0-9.e]+)<', svg)]
    assert len(xt) >= 2 and all(lo <= t <= hi for t in xt)  # round x ticks inside the drawn range
    assert re.search(r'text-anchor="end">0<', svg) and re.search(r'text-anchor="end">55<', svg)  # y: 0 and the top bar
    assert 'fill="#f8f8f8"' in svg  # own light card: dark text stays readable in dark mode
    assert histogram_svg(counts, edges)[0] == svg
    assert histogram_svg(torch.zeros(64, dtype=torch.long), edges) == ("", 0.0, 0.0)


@pytest.mark.parametrize("lo,hi", [(3.0, 5.5), (-0.7, 12.3), (0.0, 0.004), (-5.0, -1.0)])
def test_nice_ticks_are_round_and_inside(lo, hi):
    t = _nice_ticks(lo, hi)
    assert 2 <= len(t) <= 8 and all(lo - 1e-12 <= v <= hi + 1e-12 for v in t)
    steps = {round(b - a, 12) for a, b in zip(t, t[1:])}
    assert len(steps) == 1


def _neurons(k: int, tile: int, rules: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"picks": torch.tensor([[100 + 37 * i, 3, 4] for i in range(k)]),
            "values": torch.rand(k, generator=g) * 1000,
            "boxes": torch.tensor([[10, 10, 60, 60]] * k),
            "proj": torch.randint(0, 255, (rules, k, 3, tile, tile), dtype=torch.uint8, generator=g),
            "patch": torch.randint(0, 255, (k, 3, tile, tile), dtype=torch.uint8, generator=g)}


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("k,tile,display_w", [(4, 80, 720), (6, 80, 720), (3, 48, 720), (8, 80, 200)])
def test_neuron_figure_labels_do_not_touch_and_stay_legible(k, tile, display_w):
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    labels = ["n01440764_a_very_long_photo_identifier_that_would_run_into_its_neighbour", "dog"]
    fig = neuron_figure(images, labels, [_neurons(k, tile), _neurons(k - 1, tile, seed=1)], tile, display_w=display_w)
    boxes = fig.info["label_boxes"]
    assert len(boxes) == 2 + 2 * (2 * k - 1)  # image ids, then "ch N" and the activation per unit
    for i, a in enumerate(boxes):
        assert a[2] - a[0] <= tile and 0 <= a[0] and a[2] <= fig.width and a[3] <= fig.height
        for b in boxes[i + 1:]:
            assert not _overlap(a, b), (a, b)
    # the font, scaled to the shown width, stays at least 11 px: glyph height of a label line
    shown = min(1.0, display_w / fig.width)
    cap_h = max(b[3] - b[1] for b in boxes)
    assert cap_h * shown >= 8  # cap height of an ≥ 11 px font
    if display_w >= 720:  # room for the image and a unit: fits the column unscaled
        assert fig.width <= display_w


def test_neuron_figure_nothing_to_draw():
    assert neuron_figure([], [], [], 80) is None


def test_units_claim_counts_from_the_numbers():
    ev = {"units": ["stage3:44", "stage3:30", "stage6:20", "head:7"], "dgn_am_activation": [51.7, 60.9, 5.0, 0.0],
          "val_p99": [12.9, 13.1, 6.99, 2.5], "n_val_images": 3925}
    c = units_claim(ev)
    assert (c["n"], c["n_beat"]) == (4, 2)
    assert c["layers"] == ["stage3", "stage6", "head"]
    assert [m["unit"] for m in c["missed"]] == ["stage6:20", "head:7"]
    assert units_claim(None) is None and units_claim({"units": []}) is None
    assert units_claim({**ev, "val_p99": [1.0]}) is None  # inconsistent lengths: no claim at all
    env = make_env()
    src = env.loader.get_source(env, "dgn_am/method.md.j2")[0]
    (line,) = [ln for ln in src.splitlines() if "Hidden units of" in ln]  # the page's own row, rendered
    row = env.from_string("{% set u = units_claim %}" + line).render(units_claim=c)
    assert "Hidden units of stage3, stage6, head (4 evaluated units)" in row
    assert "| 2 / 4; below: stage6:20 (5.00 vs 6.99), head:7 (0.00 vs 2.50) |" in row


def test_unit_note_explains_zero_activation():
    assert unit_note(0.0) == UNREACHED and "rectifier" in UNREACHED
    assert unit_note(-0.3) is not None and unit_note(3.2) is None
