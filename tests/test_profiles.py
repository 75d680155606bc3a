"""Build profiles (generator/profiles.py): preview on a CPU, full on a GPU, explicit settings win."""
from __future__ import annotations

import pytest

from generator import profiles
from generator.config import Config, ConfigError, read_toml, DEFAULT_CONFIG
from generator.stages import atlas, dgn_am, findings


@pytest.mark.parametrize("name,device,cuda,want", [
    ("auto", "auto", False, "preview"), ("auto", "auto", True, "full"), ("auto", "cpu", True, "preview"),
    ("auto", "cuda", True, "full"), ("preview", "auto", True, "preview"), ("full", "cpu", False, "full")])
def test_auto_is_full_on_a_gpu_and_preview_elsewhere(name, device, cuda, want):
    assert profiles.resolve(name, device, cuda_available=cuda) == want


def _cfg(profile, **findings_table):
    return Config({"build": {"profile": profile, "device": "cpu"}, **({"findings": findings_table} if findings_table else {})})


def test_the_profile_sizes_the_stages_and_explicit_settings_win():
    prev, full = findings.settings(_cfg("preview")), findings.settings(_cfg("full"))
    assert (prev["images"], full["images"]) == (30, 100)
    assert full["expensive_images"] >= 30 and full["sanity_images"] >= 100 and full["sanity_expensive_images"] >= 30
    # the cheap methods' checks keep at least 30 photos in preview, the randomisation cascade and the other checks alike
    assert min(prev[k] for k in ("images", "faithfulness_images", "invariance_images", "fragility_images",
                                 "sanity_images")) >= 30
    assert findings.settings(_cfg("full", images=12))["images"] == 12  # the config file wins
    # units ablated per layer (selectivity vs importance): at least 32 in full, fewer in preview, the config file wins
    assert full["ablation_units_per_layer"] >= 32 > prev["ablation_units_per_layer"] > 0
    assert findings.settings(_cfg("full", ablation_units_per_layer=5))["ablation_units_per_layer"] == 5
    assert dgn_am.settings(_cfg("preview"))["ppgn_steps"] < dgn_am.settings(_cfg("full"))["ppgn_steps"] == 600
    assert atlas.settings(_cfg("full"))["max_images"] == 0 and atlas.settings(_cfg("preview"))["max_images"] > 0
    # the command line's --profile (Config.override) switches the sizes
    c = _cfg("preview")
    c.override(profile="full")
    assert findings.settings(c)["images"] == 100
    with pytest.raises(ConfigError, match="profile"):
        _cfg("fast")


def test_the_default_config_leaves_the_sizes_to_the_profile():
    data = read_toml(DEFAULT_CONFIG, "config")
    for table, keys in profiles.SETTINGS["full"].items():
        assert not set(keys) & set(data.get(table, {})), f"data/config.toml [{table}] fixes a profile-sized key"


def test_the_line_on_the_pages_names_the_profile_its_n_and_the_full_build():
    c = _cfg("preview", images=40)
    line = c.profile_line("findings", findings.settings(c))
    assert "**preview** profile" in line and "cheap methods 40 (set in the config)" in line
    assert "PROFILE=full" in line
    assert "units ablated per layer (drawn at random) 4" in line
    # one sentence with the leading sizes and how to build the full one, the other sizes folded under it (the page
    # leads with its own content)
    head, _, fold = line.partition('??? note "Every size the preview profile set for these numbers"')
    assert "cheap methods 40 (set in the config)" in head and "PROFILE=full" in head and "\n" not in head.strip()
    assert "units ablated per layer (drawn at random) 4" in fold and "cheap methods 40" not in fold
    assert fold.startswith("\n\n    ") and fold.rstrip().endswith(".")
    steps = c.profile_line("dgn_am", dgn_am.settings(c))  # two sizes, both in the sentence: nothing to fold
    assert "DGN-AM steps" in steps and "PPGN chain steps" in steps and "???" not in steps
    assert "**full** profile" in _cfg("full").profile_line("findings", findings.settings(_cfg("full")))
    assert c.profile_line("activity", {"top_channels": 16}) == ""  # nothing profile-sized there
