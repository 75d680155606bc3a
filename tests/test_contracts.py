"""Stage contracts and config checks: a configuration that cannot work is one line and exit 2,
found before any model is loaded."""
import pytest

from generator import stages
from generator.cli import main
from generator.config import Config, ConfigError, read_table


def _run(capsys, tmp_path, *args, config_text=None):
    argv = ["build", "--out", str(tmp_path / "gen"), "--cache", str(tmp_path / "cache"), "--offline",
            "--models", "efficientnet_lite0", *args]
    if config_text is not None:
        cfg = tmp_path / "config.toml"
        cfg.write_text(config_text)
        argv += ["--config", str(cfg)]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_wrong_stage_order_is_one_line_and_exit_2(capsys, tmp_path):
    rc, err = _run(capsys, tmp_path, "--stages", "overview,atlas,dgn_am")
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: [build].stages:") and "'dgn_am' must come before 'atlas'" in err[0]
    assert not (tmp_path / "gen").exists()  # nothing was built


@pytest.mark.parametrize("text, expected", [
    ("[attribution]\nbogus = 1\n", "[attribution] unknown key 'bogus'; allowed: methods,"),
    ("[atlas]\ntop_k = \"abc\"\n", "[atlas] top_k = 'abc': must be an integer"),
    ("[findings]\nmethods = [\"saliency\", \"nope\"]\n", "[findings] methods: unknown value 'nope'; allowed: saliency"),
    ("[build]\nbatch_size = 0\n", "[build] batch_size = 0: must be at least 1"),
    ("[build]\nstages = [\"overview\", \"nope\"]\n", "[build].stages: unknown stage 'nope'"),
    ("[dgn_am]\nclasses = [5000]\n", "[dgn_am] classes: 5000 is not an ImageNet class index"),
])
def test_bad_config_is_one_line_naming_the_key(capsys, tmp_path, text, expected):
    rc, err = _run(capsys, tmp_path, config_text=text)
    assert rc == 2 and len(err) == 1, err
    assert expected in err[0]
    assert not (tmp_path / "gen").exists()


def test_a_missing_hard_need_names_the_stage_to_add(monkeypatch):
    monkeypatch.setattr(stages.load("atlas"), "NEEDS", ("unit_images",))
    with pytest.raises(ConfigError, match="stage 'atlas' needs 'unit_images' from stage 'dgn_am'; add 'dgn_am'"):
        stages.plan(["overview", "atlas"])
    assert [m.__name__ for m in stages.plan(["dgn_am", "atlas"])] == ["generator.stages.dgn_am",
                                                                      "generator.stages.atlas"]


def test_uses_is_optional_but_ordered():
    stages.plan(["overview", "atlas"])  # atlas shows DGN-AM pictures only when dgn_am runs
    with pytest.raises(ConfigError, match="listed twice"):
        stages.plan(["overview", "overview"])


def test_read_table_types_and_defaults():
    d = {"n": 3, "x": 0.5, "flag": False, "names": [], "any": None}
    assert read_table({"x": 2}, "t", d) == {**d, "x": 2.0}  # an int where a float is expected
    for bad in ({"n": 1.5}, {"n": True}, {"flag": 1}, {"names": "a"}, {"x": "1"}):
        with pytest.raises(ConfigError, match=rf"\[t\] {next(iter(bad))} = "):
            read_table(bad, "t", d)
    assert read_table({"any": {"a": 1}}, "t", d)["any"] == {"a": 1}
    with pytest.raises(ConfigError, match="must be an integer or a list"):
        read_table({"n": "x"}, "t", d, types={"n": (int, list)})
    # every stage's defaults pass their own check, and the shipped config is valid for every stage
    cfg = Config.load()
    for name in stages.STAGES:
        mod = stages.load(name)
        if hasattr(mod, "settings"):
            mod.settings(cfg)
            mod.settings(Config({}))
