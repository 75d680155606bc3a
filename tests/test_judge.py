"""The independent-judge evaluation and the DGN-AM page's photo column, on tiny CPU networks."""
from __future__ import annotations

import types

import pytest
import torch
from PIL import Image
from torch import nn

from generator.deepsim.judge import evaluate_maker, judge_verdicts, pick_judge, read_photo_index, summarize, takeaway
from generator.models import Preprocess

N_CLASSES = 20


class Net(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, N_CLASSES)
        nn.init.normal_(self.fc.weight, std=3.0)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(torch.relu(self.conv(x - 0.5)).mean((2, 3)))


def tiny_model(name: str, seed: int, size: int = 16):
    spec = types.SimpleNamespace(input_size=size, title=name.upper(), preprocess=Preprocess(size, size + 2))
    return types.SimpleNamespace(name=name, net=Net(seed), spec=spec, labels=[f"class {i}" for i in range(N_CLASSES)])


def test_pick_judge_never_the_maker_and_avoids_the_encoder():
    names = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    for m in names:
        j, clean = pick_judge(m, names, exclude=("efficientnet_lite0",))
        assert j != m and j != "efficientnet_lite0" and clean
    assert pick_judge("efficientnet_lite0", names)[0] == "efficientnet_lite2"
    assert pick_judge("efficientnet_lite2", ["efficientnet_lite0", "efficientnet_lite2"], exclude=("efficientnet_lite0",)) \
        == ("efficientnet_lite0", False)  # only the encoder is left: used, but flagged
    assert pick_judge("alexnet", ["alexnet"]) == (None, False)
    assert pick_judge("toy", ["toy", "other"])[0] == "other"


def test_pictures_made_on_a_are_scored_on_b_never_on_a():
    a, b = tiny_model("a", 1), tiny_model("b", 2)
    classes = list(range(0, N_CLASSES, 4))
    seen = {"a": [], "b": []}
    for m in (a, b):
        m.net.register_forward_hook(lambda mod, inp, out, n=m.name: seen[n].append(torch.is_grad_enabled()))
    rows = evaluate_maker(None, None, a, b, classes, steps=5, ppgn=None, baselines=["plain"], parts=["pixel-plain", "random"])
    assert set(rows) == {"pixel-plain", "random"}
    # a: optimised with gradients (making) plus one forward-only pass for the maker's own score;
    # b: forward-only passes, the judge's verdicts
    assert any(seen["a"]) and seen["b"] and not any(seen["b"])
    r = rows["pixel-plain"]
    assert r["n"] == len(classes) and 0 <= r["top1"] <= r["top5"] <= 1 and len(r["ranks"]) == len(classes)
    # a judge whose verdict ignores the picture (fixed logits, class 0 first, then 1, 2, …): the
    # table must show exactly its ranks, whatever the maker made
    fixed = tiny_model("fixed", 3)
    with torch.no_grad():
        fixed.net.conv.weight.zero_()
        fixed.net.conv.bias.zero_()
        fixed.net.fc.bias.copy_(-torch.arange(N_CLASSES, dtype=torch.float))
    rows = evaluate_maker(None, None, a, fixed, classes, steps=20, ppgn=None, baselines=["plain"], parts=["pixel-plain"])
    r = rows["pixel-plain"]
    assert r["ranks"] == classes  # rank of class c under the fixed judge is c
    assert r["top1"] == pytest.approx(1 / len(classes)) and r["top5"] == pytest.approx(2 / len(classes))
    assert r["maker_prob_mean"] > r["prob_mean"]  # the maker (optimised) is surer than this judge
    with pytest.raises(ValueError, match="different network"):
        evaluate_maker(None, None, a, a, classes, steps=1, ppgn=None, baselines=[], parts=["random"])


def test_random_pictures_score_at_chance():
    judge = tiny_model("b", 2)
    g = torch.Generator().manual_seed(0)
    reps = 40
    classes = [c for c in range(N_CLASSES) for _ in range(reps)]  # every class equally often
    v = judge_verdicts(judge, torch.rand(len(classes), 3, 16, 16, generator=g), classes)
    s = summarize(v["rank"])
    assert s["n"] == N_CLASSES * reps
    assert abs(s["top1"] - 1 / N_CLASSES) < 0.03 and abs(s["top5"] - 5 / N_CLASSES) < 0.06
    # ranks agree with the judge's own logits
    x = torch.rand(4, 3, 16, 16, generator=g)
    v = judge_verdicts(judge, x, [0, 1, 2, 3])
    logits = judge.net(x)
    assert (v["top"] == logits.argmax(1)).all()
    assert ((v["rank"] == 0) == (logits.argmax(1) == torch.arange(4))).all()


def test_takeaway_reads_the_numbers():
    rows = {"dgn_am": {"top5": 0.4}, "pixel-plain": {"top5": 0.01}, "photo": {"top5": 0.9}}
    t = takeaway(rows)
    assert "DGN-AM 40 %" in t and "transfer better than pixel-space" in t and "hardly transfer" in t
    assert "does not" in takeaway({"dgn_am": {"top5": 0.02}, "pixel-plain": {"top5": 0.01}})
    assert takeaway({}) == ""
    mixed = takeaway({"dgn_am": {"top5": 0.46}, "pixel-plain": {"top5": 0.0}, "pixel-fourier": {"top5": 0.60}})
    assert "pixel-space visualisations transfer better" in mixed and "Fourier ones transfer, plain ones hardly" in mixed
    # the better of the prior's two methods is what the prior is compared by
    both = takeaway({"dgn_am": {"top5": 0.46}, "ppgn": {"top5": 0.64}, "pixel-plain": {"top5": 0.0},
                     "pixel-fourier": {"top5": 0.60}})
    assert "(best: PPGN) does not make" in both and "within 5 points" in both


def _fake_out(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    img = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    return {"dgn": {"images": img(n, 3, 8, 8), "prob": [0.5] * n},
            "ppgn": {"samples": img(n, 2, 3, 8, 8), "prob": torch.full((n, 2), 0.5), "steps": [1, 2]},
            "baselines": {"plain": {"images": img(n, 3, 16, 16), "prob": [0.9] * n}}}


def _ctx(tmp_path, models):
    return types.SimpleNamespace(
        figure_path=lambda rel, **meta: tmp_path / "fig" / rel,
        config=types.SimpleNamespace(resolve_path=lambda p: tmp_path / p),
        models=models)


def test_photo_column_skipped_with_a_note_when_the_sample_is_absent(tmp_path):
    from generator.stages.dgn_am import _figures, photo_index
    model, judge = tiny_model("a", 1), tiny_model("b", 2)
    ctx = _ctx(tmp_path, [model, judge])
    s = {"classes": [3, 7], "photos": "../shared-missing/imagenet-1k-sample"}
    photos, note = photo_index(ctx, s)
    assert photos == {} and "no photo column" in note and "not found" in note
    figs = _figures(ctx, model, _fake_out(2), s, photos, judge)
    assert "photo" not in figs["columns"] and len(figs["classes"]) == 2
    assert all(len(c["judged"]) == len(figs["columns"]) for c in figs["classes"])
    assert (tmp_path / "fig" / "dgn_am/a/classes/3.webp").is_file()
    assert photo_index(ctx, {**s, "photos": ""})[1].startswith("no photo column")


def test_photo_column_shown_with_the_judges_verdict_when_present(tmp_path):
    from generator.stages.dgn_am import _figures, photo_index
    folder = tmp_path / "sample"
    folder.mkdir()
    Image.new("RGB", (48, 40), (200, 30, 30)).save(folder / "003_x.jpg")
    Image.new("RGB", (8, 8)).save(folder / "005_tiny.jpg")  # rejected (too small): left out, no crash
    (folder / "classes.tsv").write_text("file\timagenet_index\twnid\tlabel\n003_x.jpg\t3\tn01491361\tthree\n"
                                        "007_missing.jpg\t7\tn01514668\tseven\n"
                                        "005_tiny.jpg\t5\tn01496331\tfive\n")
    assert sorted(read_photo_index(folder)) == [3, 5]  # a listed file that is not there is left out
    model, judge = tiny_model("a", 1), tiny_model("b", 2)
    ctx = _ctx(tmp_path, [model, judge])
    s = {"classes": [3, 7, 5], "photos": "sample"}
    photos, note = photo_index(ctx, s)
    assert note is None and set(photos) == {3, 5}
    figs = _figures(ctx, model, _fake_out(3), s, photos, judge)
    assert figs["columns"][0] == "photo" and figs["judge"] == "B"
    first, second, third = figs["classes"]
    assert third["judged"][0] == "–"
    assert len(first["judged"]) == len(figs["columns"]) and first["judged"][0] != "–"
    assert second["judged"][0] == "–"  # class 7 has no photo: a blank tile, no verdict
    wide = Image.open(tmp_path / "fig" / "dgn_am/a/classes/3.webp").size[0]
    # no judge (one model loaded): no verdicts, pictures still drawn
    figs = _figures(ctx, model, _fake_out(3), s, photos, None)
    assert all(c["judged"] == [] for c in figs["classes"]) and figs["judge"] is None
    assert wide == Image.open(tmp_path / "fig" / "dgn_am/a/classes/3.webp").size[0]


def test_merge_pools_the_pairs_and_refuses_other_budgets(tmp_path):
    import json

    from generator.deepsim.judge_eval import markdown_table, merge
    base = {"format": "cnnvis-judge/1", "generator_sha256": "abc", "classes": [1, 2], "steps": 5, "ppgn": None,
            "baselines": ["plain"], "complete": True}
    a = {**base, "pairs": [{"maker": "a", "judge": "b", "rows": {"dgn_am": {"ranks": [0, 7], "prob_mean": 0.5,
                                                                            "maker_prob_mean": 0.9}}}]}
    b = {**base, "complete": False,
         "pairs": [{"maker": "a", "judge": "b", "rows": {"pixel-plain": {"ranks": [9, 9], "prob_mean": 0.0}}},
                   {"maker": "c", "judge": "b", "rows": {"dgn_am": {"ranks": [3, 100], "prob_mean": 0.1,
                                                                    "maker_prob_mean": 0.7}}}]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    r = merge([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == r and r["complete"] is False
    assert r["summary"]["dgn_am"]["n"] == 4 and r["summary"]["dgn_am"]["top1"] == 0.25
    assert r["summary"]["dgn_am"]["top5"] == 0.5 and r["summary"]["dgn_am"]["maker_prob_mean"] == pytest.approx(0.8)
    assert r["summary"]["pixel-plain"]["top5"] == 0.0 and "DGN-AM 50 %" in r["takeaway"]
    assert "| DGN-AM | 25 % | 50 % |" in markdown_table(r)
    (tmp_path / "c.json").write_text(json.dumps({**b, "steps": 6}))
    with pytest.raises(ValueError, match="steps"):
        merge([tmp_path / "a.json", tmp_path / "c.json"], tmp_path / "m2.json")


def test_evaluation_and_judge_tables_shown_only_for_the_generator_they_measured(tmp_path):
    import json

    from generator.deepsim import read_measurement
    ev, jt = tmp_path / "g.eval.json", tmp_path / "g.judge.json"
    load = lambda p, sha: read_measurement(p, sha, "the command")  # noqa: E731
    assert load(ev, "abc") == (None, None) and load(jt, "abc") == (None, None)  # not measured
    ev.write_text(json.dumps({"generator_sha256": "abc", "dgn_am": {"classes": [1]}}))
    jt.write_text(json.dumps({"generator_sha256": "abc", "summary": {}}))
    assert load(ev, "abc")[0]["dgn_am"] == {"classes": [1]}
    assert load(jt, "abc") == ({"generator_sha256": "abc", "summary": {}}, None)
    # another generator file (e.g. a retrained one under the same name): neither table is shown
    assert load(ev, "def")[0] is None
    assert load(jt, "def")[0] is None and "another generator" in load(jt, "def")[1] and "the command" in load(jt, "def")[1]
    ev.write_text(json.dumps({"generator_metrics": {"step": 800}}))  # written before the sha was recorded
    assert load(ev, "abc")[0] is None
    ev.write_text("{broken")
    assert load(ev, "abc") == (None, "g.eval.json could not be read (JSONDecodeError)")
    ev.write_text("[1, 2]")  # valid JSON, not a table
    assert load(ev, "abc")[0] is None


def test_prior_vs_pixel_contrast_is_per_class_with_an_interval_and_decides_only_when_it_clears_zero():
    from generator.metrics.transfer import class_top5, contrast

    classes = list(range(40))
    ppgn = [r for c in classes for r in ((0, 9) if c % 2 else (0, 1))]  # 2 samples per chain: 1/2 or 2/2 in top 5
    pairs = [{"maker": "m", "classes": classes,
              "rows": {"ppgn": {"ranks": ppgn}, "dgn_am": {"ranks": [0] * 40},
                       "pixel-fourier": {"ranks": [9 if c < 30 else 0 for c in classes]}}}]
    per = class_top5(pairs, "ppgn")
    assert per[("m", 0)] == 1.0 and per[("m", 1)] == 0.5 and len(per) == 40
    summary = {"ppgn": {"top5": 0.75}, "dgn_am": {"top5": 1.0}, "pixel-fourier": {"top5": 0.25}}
    c = contrast(pairs, summary)
    assert c["prior"] == "dgn_am" and c["pixel"] == "pixel-fourier" and c["n"] == 40
    assert c["mean"] == pytest.approx(0.75) and 0 < c["lo"] <= c["mean"] <= c["hi"]
    t = takeaway(summary, c)
    assert "transfer better than pixel-space ones (+75 points per class" in t and "n = 40 classes" in t
    # a difference the interval does not clear is "undecided", even when it exceeds the 5-point rule
    close = {"prior": "ppgn", "pixel": "pixel-fourier", "mean": 0.12, "lo": -0.04, "hi": 0.30, "n": 50}
    t = takeaway({"ppgn": {"top5": 0.72}, "pixel-fourier": {"top5": 0.60}}, close)
    assert "is undecided at n = 50 classes (+12 points per class, 95 % interval -4 to +30)" in t
    assert "transfer better than pixel-space ones" not in t
    assert "transfer better than pixel-space ones" in takeaway({"ppgn": {"top5": 0.72}, "pixel-fourier": {"top5": 0.60}})


def test_judge_diversity_averages_the_ppgn_rows_and_is_none_without_them():
    from generator.deepsim.judge import judge_diversity
    assert judge_diversity(None) is None and judge_diversity({"pairs": [{"rows": {"dgn_am": {}}}]}) is None
    t = {"pairs": [{"rows": {"ppgn": {"diversity_judge_logits": 0.2}}}, {"rows": {"ppgn": {"diversity_judge_logits": 0.4}}},
                   {"rows": {"photo": {}}}]}
    assert judge_diversity(t) == pytest.approx(0.3)
