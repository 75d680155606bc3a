"""The ImageNet input layer: class index ↔ WordNet id ↔ label, the labelled-photo readers, photos opened
only through ``images.load_rgb``, and no import cycle among the input modules."""
from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

from generator import image_folder, imagenet
from generator.images import ImageRejected, load_rgb
from generator.metrics import model_table
from generator.models import Preprocess

PACKAGE = Path(__file__).resolve().parents[1] / "generator"
SHARED = Path(__file__).resolve().parents[2] / "shared"
TENCH, SPRINGER = "n01440764", "n02102040"  # ImageNet-1k classes 0 and 217


# ------------------------------------------------------------------------------------- classes


def test_index_wnid_label_round_trip_for_all_1000_classes():
    from torchvision.models import ResNet50_Weights

    ids, names, index = imagenet.wnids(), imagenet.labels(), imagenet.wnid_to_index()
    assert len(ids) == len(set(ids)) == len(names) == len(set(names)) == len(index) == imagenet.NUM_CLASSES
    assert names == list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])  # the registry's class order
    assert ids == sorted(ids) and all(imagenet.WNID.fullmatch(w) for w in ids)  # ILSVRC-2012 numbers sorted ids
    assert all(index[ids[i]] == i for i in range(imagenet.NUM_CLASSES))
    assert [(ids[i], names[i]) for i in (0, 217, 999)] == [(TENCH, "tench"), (SPRINGER, "English springer"),
                                                          ("n15075141", "toilet tissue")]
    with pytest.raises(TypeError):
        index["n00000000"] = 3  # the cached map is read-only
    names[0] = "changed"
    assert imagenet.labels()[0] == "tench"  # callers get copies


def test_class_label_of_an_imagefolder_class_uses_the_same_ids():
    names = imagenet.labels()
    assert image_folder.class_label(SPRINGER, names) == "English springer"
    assert image_folder.class_label("n99999999", names) == "n99999999"  # not an ImageNet-1k id
    assert image_folder.class_label(TENCH, names[:10]) == TENCH  # not a 1000-class model


# --------------------------------------------------------------------------------- classes.tsv

HEADER = "file\timagenet_index\twnid\tlabel\n"


def _sample(tmp_path: Path, body: str, files: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / "sample"
    folder.mkdir(exist_ok=True)
    (folder / "classes.tsv").write_text(HEADER + body, encoding="utf-8")
    for name in files:
        Image.new("RGB", (40, 40), (9, 99, 199)).save(folder / name)
    return folder


def test_classes_tsv_rows_become_records_with_torchvisions_labels(tmp_path):
    folder = _sample(tmp_path, f"000_a.jpg\t0\t{TENCH}\ttench\n\n217_b.jpg\t217\t{SPRINGER}\tspringer spaniel\n"
                               "999_missing.jpg\t999\tn15075141\ttoilet tissue\n", ("000_a.jpg", "217_b.jpg"))
    rows = imagenet.read_classes_tsv(folder / "classes.tsv")
    assert [(r.path.name, r.index, r.wnid, r.label) for r in rows] == [
        ("000_a.jpg", 0, TENCH, "tench"), ("217_b.jpg", 217, SPRINGER, "English springer"),
        ("999_missing.jpg", 999, "n15075141", "toilet tissue")]
    sample = imagenet.sample_1k(folder)
    assert [r.index for r in sample] == [0, 217]  # a listed file that is not there is left out
    assert all(r.path.parent == folder for r in sample)
    assert [r.index for r in imagenet.sample_1k(folder, 1)] == [0]
    assert imagenet.sample_1k(tmp_path / "nothing-here") == []


def test_sample_spread_over_the_table(tmp_path):
    ids = imagenet.wnids()
    body = "".join(f"{i:03d}.jpg\t{i}\t{ids[i]}\tx\n" for i in range(0, 1000, 100))
    folder = _sample(tmp_path, body, tuple(f"{i:03d}.jpg" for i in range(0, 1000, 100)))
    assert [r.index for r in imagenet.sample_1k(folder, 4)] == [0, 300, 600, 900]
    assert len(imagenet.sample_1k(folder, 50)) == len(imagenet.sample_1k(folder)) == 10


@pytest.mark.parametrize("body, message", [
    (f"000_a.jpg\t0\t{TENCH}\ttench\n001_b.jpg\t1\tn01443537\n", r"classes.tsv:3: 3 tab-separated fields, the header has 4"),
    ("000_a.jpg\tzero\tn01440764\ttench\n", r"classes.tsv:2: imagenet_index 'zero' is not an integer from 0 to 999"),
    ("000_a.jpg\t1000\tn01440764\ttench\n", r"classes.tsv:2: imagenet_index '1000'"),
    ("000_a.jpg\t217\tn01440764\ttench\n", r"classes.tsv:2: wnid 'n01440764' is not the WordNet id of class 217 "
                                          r"\(English springer: n02102040\)"),
    ("../000_a.jpg\t0\tn01440764\ttench\n", r"classes.tsv:2: file '../000_a.jpg' must name a file inside"),
    ("\t0\tn01440764\ttench\n", r"classes.tsv:2: file '' must name a file inside"),
])
def test_a_malformed_classes_tsv_is_an_error_naming_the_line(tmp_path, body, message):
    folder = _sample(tmp_path, body)
    with pytest.raises(ValueError, match=message):
        imagenet.sample_1k(folder)


def test_classes_tsv_header_must_name_the_columns(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "classes.tsv").write_text("file,imagenet_index\n000_a.jpg,0\n")
    with pytest.raises(ValueError, match=r"classes.tsv:1: the header has no column file, imagenet_index"):
        imagenet.sample_1k(folder)
    (folder / "classes.tsv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        imagenet.sample_1k(folder)


# ---------------------------------------------------------------------------------- ImageFolder


def _imagefolder(root: Path) -> Path:
    """val/<wnid>/*.jpg: tench 3 photos, springer 2; a non-ImageNet class folder, a hidden file,
    a text file and a hidden folder, all left out."""
    for wnid, n in ((TENCH, 3), (SPRINGER, 2), ("not_a_class", 2), (".cache", 1)):
        (root / wnid).mkdir(parents=True)
        for j in range(n):
            Image.new("RGB", (48, 40), (40 * j, 80, 120)).save(root / wnid / f"{wnid[-3:]}_{j}.jpg", quality=90)
    (root / TENCH / "notes.txt").write_text("not a photo")
    (root / TENCH / "._000_0.jpg").write_bytes(b"resource fork, not a JPEG")
    return root


def test_imagefolder_pairs_photos_with_class_indices_balanced(tmp_path):
    root = _imagefolder(tmp_path / "val")
    assert imagenet.folder_wnids(root) == {TENCH: 0, SPRINGER: 217}
    pairs = imagenet.imagefolder(root)
    assert [(p.relative_to(root).as_posix(), c) for p, c in pairs] == [
        (f"{TENCH}/764_0.jpg", 0), (f"{SPRINGER}/040_0.jpg", 217), (f"{TENCH}/764_1.jpg", 0),
        (f"{SPRINGER}/040_1.jpg", 217), (f"{TENCH}/764_2.jpg", 0)]
    assert [c for _p, c in imagenet.imagefolder(root, 2)] == [0, 217]  # the first n are balanced
    assert imagenet.imagefolder(root, 0) == imagenet.imagefolder(root, None) == pairs
    for p, _c in pairs:  # every listed file is a photo load_rgb accepts
        assert load_rgb(p)[0].size == (48, 40)
    # the old names still answer, from the same reader
    assert model_table.list_imagefolder(root, model_table.read_wnid_map(root), 3) == pairs[:3]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        imagenet.imagefolder(tmp_path / "missing")


def test_a_readme_table_adds_ids_but_cannot_contradict_imagenet(tmp_path):
    root = _imagefolder(tmp_path / "val")
    (root / "n00000007").mkdir()
    Image.new("RGB", (40, 40)).save(root / "n00000007" / "a.png")
    readme = tmp_path / "README.md"
    readme.write_text("| wnid | index | label |\n|---|---|---|\n| n00000007 | 7 | made up |\n| n00000300 | 300 | no folder |\n")
    assert imagenet.folder_wnids(root) == {TENCH: 0, SPRINGER: 217, "n00000007": 7}
    assert [c for _p, c in imagenet.imagefolder(root, 3)] == [7, 0, 217]
    readme.write_text("| wnid | index | label |\n|---|---|---|\n| n01440764 | 1 | tench |\n")
    with pytest.raises(ValueError, match=r"README.md:3: n01440764 is ImageNet-1k class 0 \(tench\), not 1"):
        imagenet.folder_wnids(root)
    readme.write_text("| wnid | index | label |\n|---|---|---|\n| n00000007 | 1000 | too far |\n")
    with pytest.raises(ValueError, match="README.md:3: class index 1000 of n00000007 is outside 0–999"):
        imagenet.folder_wnids(root)


def test_accuracy_counts_open_photos_through_load_rgb(tmp_path):
    """A transparent photo is composited on white by load_rgb (PIL's own convert("RGB") would make it
    black); a file that is no photo stops the count with its name."""
    root = tmp_path / "val"
    (root / TENCH).mkdir(parents=True)
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(root / TENCH / "clear.png")  # 30 px: small photos count too
    files = imagenet.imagefolder(root)
    spec = types.SimpleNamespace(preprocess=Preprocess(32, 32))

    def net(x):  # bright photos → class 0 (tench), dark ones → class 217
        out = torch.zeros(len(x), 1000)
        out[:, 0], out[:, 217] = x.mean((1, 2, 3)), 0.5
        return out
    counts = model_table.accuracy_counts(net, spec, files, [0, 217])
    assert (counts["n"], counts["top1"], counts["restricted"]) == (1, 1, 1)
    for k in range(5):  # decoding threads (as on a GPU) count the same photos, in the same order
        Image.new("RGB", (40, 30), (40 * k, 20, 20)).save(root / TENCH / f"p{k}.png")
    files = imagenet.imagefolder(root)
    assert model_table.accuracy_counts(net, spec, files, [0, 217], batch_size=2) == \
        model_table.accuracy_counts(net, spec, files, [0, 217], batch_size=2, decode_workers=3)
    (root / TENCH / "fake.jpg").write_text("not a photo")
    for workers in (0, 2):
        with pytest.raises(ImageRejected, match=r"fake\.jpg: not an image PIL can read"):
            model_table.accuracy_counts(net, spec, imagenet.imagefolder(root), [0, 217], decode_workers=workers)


def test_deepsim_training_crops_open_photos_through_load_rgb(tmp_path):
    from generator.deepsim.train import load_crop

    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    x = load_crop(tmp_path / "clear.png", 24, 16)
    assert x.shape == (3, 16, 16) and bool((x == 1).all())  # white, as load_rgb composites alpha


# ------------------------------------------------------------------------------ ../shared data


@pytest.mark.skipif(not (SHARED / "imagenet-1k-sample" / "classes.tsv").is_file(), reason="no ../shared sample")
def test_the_shared_1000_class_sample_agrees_with_the_class_list():
    rows = imagenet.read_classes_tsv(SHARED / "imagenet-1k-sample" / "classes.tsv")  # raises on any disagreement
    assert sorted(r.index for r in rows) == list(range(1000))


@pytest.mark.skipif(not (SHARED / "imagenette" / "val").is_dir(), reason="no ../shared Imagenette")
def test_the_shared_imagenette_readme_agrees_with_the_class_list():
    wmap = imagenet.folder_wnids(SHARED / "imagenette" / "val")  # checks its README table
    assert len(wmap) == 10 and wmap[TENCH] == 0


# ------------------------------------------------------------------------------ import structure

INPUT_MODULES = ("generator.imagenet", "generator.images", "generator.preprocess", "generator.models",
                 "generator.image_folder")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def package_imports(path: Path, source: str | None = None) -> set[str]:
    """The package's modules that ``path`` imports, at the top or inside functions."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names if _is_module(f"{module}.{a.name}"))
    return {m for m in found if m.split(".")[0] == "generator" and _is_module(m)}


def import_graph(override: dict[str, str] | None = None) -> dict[str, set[str]]:
    """module → the package modules it imports; ``override``: module → source to use instead of its file."""
    override = override or {}
    return {_module_name(p): package_imports(p, override.get(_module_name(p))) for p in sorted(PACKAGE.rglob("*.py"))}


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A shortest import path from ``start`` back to itself (``[start, …, start]``), or None."""
    parent: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        m = todo.pop(0)
        if start in graph.get(m, ()):
            path = [start, m]
            while path[-1] != start:
                path.append(parent[path[-1]])
            return path[::-1]
        for n in sorted(graph.get(m, ())):
            if n not in parent:
                parent[n] = m
                todo.append(n)
    return None


def test_no_import_cycle_through_the_input_modules():
    graph = import_graph()
    assert set(INPUT_MODULES) <= set(graph)
    assert graph["generator.imagenet"] == set()  # the bottom of the input layer
    assert "generator.models" not in graph["generator.images"]
    assert "generator.preprocess" in graph["generator.models"]
    cycles = {m: cycle_through(graph, m) for m in INPUT_MODULES}
    assert {m: c for m, c in cycles.items() if c} == {}


def test_the_checks_see_the_old_function_level_import():
    """The state before: images importing models lazily inside a function, models importing images at
    the top. Both the rule (images never imports models) and the cycle search report it."""
    images = (PACKAGE / "images.py").read_text(encoding="utf-8") + \
        "\n\ndef _class_names():\n    from .models import imagenet_labels\n    return imagenet_labels()\n"
    models = "from .images import Preprocess\n" + (PACKAGE / "models.py").read_text(encoding="utf-8")
    graph = import_graph({"generator.images": images})
    assert "generator.models" in graph["generator.images"]
    graph = import_graph({"generator.images": images, "generator.models": models})
    assert cycle_through(graph, "generator.images") == ["generator.images", "generator.models", "generator.images"]


def test_photos_are_opened_only_through_load_rgb():
    """The readers of labelled photos never open a file with PIL themselves."""
    files = [PACKAGE / "imagenet.py", PACKAGE / "image_folder.py", PACKAGE / "metrics" / "model_table.py",
             PACKAGE / "deepsim" / "train.py", PACKAGE / "deepsim" / "evaluate.py", PACKAGE / "deepsim" / "judge_eval.py"]
    assert [f.name for f in files if "Image.open(" in f.read_text(encoding="utf-8")] == []
