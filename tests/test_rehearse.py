"""The small rehearsal: all five architectures through every stage with random weights where the real ones
are missing, into its own folder and its own MkDocs site, with a banner on every page."""
import pytest

from generator.cli import main
from generator.config import Config, ConfigError
from generator.rehearse import prepare, timing_table

pytestmark = pytest.mark.slow


def test_small_rehearsal_every_stage_every_architecture(tmp_path, tmp_torch_home, capsys):
    folder = tmp_path / "rehearsal"
    rc = main(["rehearse", "--small", "--dir", str(folder), "--offline", "--device", "cpu",
               "--models", "efficientnet_lite0,alexnet,vgg16,googlenet,resnet50"])  # the five architectures
    err = capsys.readouterr().err
    assert rc == 0, err
    for name in ("alexnet", "vgg16", "googlenet", "resnet50"):
        assert f"model {name}: REHEARSAL with random weights" in err
    gen = folder / "site_src" / "generated"
    # every stage wrote its pages for every architecture
    for name in ("efficientnet_lite0", "alexnet", "vgg16", "googlenet", "resnet50"):
        page = (gen / "models" / f"{name}.md").read_text()
        for section in ("## Activity", "## Attribution", "## DGN-AM and PPGN"):
            assert section in page, (name, section)
        assert (gen / "units" / name / "index.md").is_file()
        assert f"{name}" in (gen / "findings" / "index.md").read_text()
    # a banner on every generated page and in the site's template; never a page without it
    pages = [p for p in gen.rglob("*.md") if p.name != "SUMMARY.md"]
    assert len(pages) > 30
    for p in pages:
        assert "Rehearsal: random weights" in p.read_text(), p
    html = (folder / "site" / "index.html").read_text()
    assert "random" in html and "weights" in html and "Rehearsal" in html
    assert (folder / "site" / "generated" / "models" / "vgg16.html").is_file()
    # its own cache, nothing in the real one
    assert (folder / "cache").is_dir() and any((folder / "cache").iterdir())


def test_rehearsal_refuses_the_real_site_and_cache(tmp_path):
    cfg = Config.load()
    with pytest.raises(ConfigError, match="would overwrite the real site or cache"):
        prepare(cfg, cfg.resolve_path("site_src"))
    for bad in (".cache", "site_src/generated/x", "site", "."):
        cfg = Config.load()
        with pytest.raises(ConfigError, match="would overwrite"):
            prepare(cfg, cfg.resolve_path(bad))
    cfg = prepare(Config.load(), tmp_path / "r")
    assert cfg["out"] == str((tmp_path / "r" / "site_src" / "generated").resolve())
    assert cfg["cache"] == str((tmp_path / "r" / "cache").resolve())


def test_timing_table_counts_stages_only():
    t = timing_table({"vgg16": {"load models": 9.0, "attribution": 30.0, "attribution maps": 25.0, "atlas": 12.4}},
                     ["attribution", "atlas"])
    assert t.splitlines()[0] == "| Model | attribution | atlas | total |"
    assert t.splitlines()[2] == "| vgg16 | 30 s | 12 s | 42 s |"


def test_timing_table_puts_the_plan_beside_the_measured_time():
    t = timing_table({"vgg16": {"attribution": 30.0, "atlas": 12.4}, "alexnet": {"attribution": 5.0, "atlas": 1.0}},
                     ["attribution", "atlas"], {"vgg16": {"attribution": 20.0, "atlas": 10.0}})
    lines = t.splitlines()
    assert lines[0] == "| Model | attribution | atlas | total | ratio |"
    assert lines[2] == "| vgg16 | 30 s (20 s) | 12 s (10 s) | 42 s (30 s) | 1.41 |"
    assert lines[3] == "| alexnet | 5 s | 1 s | 6 s | – |"  # no plan for that model: no estimate, no ratio
