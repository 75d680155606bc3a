"""Build configuration: a TOML file (default ``data/config.toml``) plus CLI overrides.

The ``[build]`` table drives the pipeline; every stage reads its own table
(``[activity]``, ``[attribution]``, ``[findings]``, ``[atlas]``, ``[dgn_am]``) through
:meth:`Config.table`, which checks it against the stage's defaults: an unknown key or a
value of the wrong type is a :class:`ConfigError` (one line naming the key, its table and
what is allowed). A model can have its own table ``[models.<name>]``
(e.g. ``layers = ["conv1", "conv5"]``).
"""
from __future__ import annotations

CACHE_NEUTRAL = True  # cannot change a cached value: left out of code fingerprints (generator.cache.key)

import copy
import re
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import profiles

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "data" / "config.toml"

BUILD_DEFAULTS: dict[str, Any] = {
    "models": ["efficientnet_lite0"],
    "images": "data/images",
    "out": "site_src/generated",
    "cache": ".cache/results",
    "device": "auto",
    "batch_size": 16,
    "strict": False,
    "offline": False,
    "weights_dir": "",
    "stages": ["overview", "activity", "home"],
    "image_limit": 0,
    "no_cache": False,
    "profile": "auto",      # auto | preview | full: how much work (generator/profiles.py); auto = full on a GPU
    "executor": "local",    # or "ray": the heavy stages' model work as Ray tasks (generator/executor.py)
    "ray_address": "",      # an existing Ray cluster ("" = start a local one)
    "render_workers": "auto",  # processes that draw and encode figures; 0 = in the build's own (generator/figure_files.py)
}

_BUILD_TYPES = {"weights_dir": (str, type(None)), "render_workers": (int, str)}


def read_toml(path: Path, what: str) -> dict:
    """A TOML file as a dict; ConfigError (one line naming the file) when it cannot be read or parsed."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be read ({e.strerror or e})") from None


class ConfigError(ValueError):
    """Bad configuration or input: one line for the user, exit code 2, nothing built."""


_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a table"}


def _type_ok(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def read_table(data: Mapping[str, Any], table: str, defaults: Mapping[str, Any],
               types: Mapping[str, type | tuple[type, ...]] | None = None,
               choices: Mapping[str, Iterable[Any]] | None = None) -> dict[str, Any]:
    """``data`` (one config table) merged over ``defaults``, checked key by key.

    A key not in ``defaults`` or a value whose type differs from its default's (or from
    ``types[key]`` where a key takes several types) raises :class:`ConfigError` naming the
    key, its table and the allowed keys or types; ``choices[key]`` restricts a value (or
    every item of a list value) to a set. Integers are accepted where a float is expected
    and converted. A default of ``None`` accepts any value.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{table}] must be a table, got {data!r}")
    out = dict(defaults)
    for key, value in data.items():
        if key not in defaults:
            raise ConfigError(f"[{table}] unknown key {key!r}; allowed: {', '.join(defaults)}")
        want = (types or {}).get(key)
        if want is None:
            default = defaults[key]
            want = None if default is None else (float,) if isinstance(default, float) else (type(default),)
        elif not isinstance(want, tuple):
            want = (want,)
        if want is not None and not _type_ok(value, want):
            names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in want)
            raise ConfigError(f"[{table}] {key} = {value!r}: must be {names}")
        if want == (float,) and isinstance(value, int):
            value = float(value)
        allowed = (choices or {}).get(key)
        if allowed is not None:
            allowed = list(allowed)
            for v in value if isinstance(value, list) else [value]:
                if v not in allowed:
                    raise ConfigError(f"[{table}] {key}: unknown value {v!r}; allowed: "
                                      f"{', '.join(map(str, allowed))}")
        out[key] = value
    return out


DEVICE_RE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def check_build(table: dict[str, Any]) -> dict[str, Any]:
    """Value ranges of ``[build]`` (types are checked by :func:`read_table`)."""
    if table["batch_size"] < 1:
        raise ConfigError(f"[build] batch_size = {table['batch_size']!r}: must be at least 1")
    if table["image_limit"] < 0:
        raise ConfigError(f"[build] image_limit = {table['image_limit']!r}: must be 0 (all) or a positive integer")
    if not DEVICE_RE.fullmatch(table["device"]):
        raise ConfigError(f"[build] device = {table['device']!r}: must be auto, cpu, cuda, cuda:N or mps")
    for key in ("models", "stages"):
        bad = [v for v in table[key] if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ConfigError(f"[build] {key}: {bad[0]!r} is not a name; must be a list of names")
    for key in ("images", "out", "cache"):
        if not table[key].strip():
            raise ConfigError(f"[build] {key} = {table[key]!r}: must be a folder path")
    rw = table["render_workers"]
    if rw != "auto" and (not isinstance(rw, int) or isinstance(rw, bool) or rw < 0):
        raise ConfigError(f"[build] render_workers = {rw!r}: must be \"auto\" or a number of processes (0: none, "
                          f"draw in the build's own process)")
    if table["profile"] not in profiles.PROFILES:
        raise ConfigError(f"[build] profile = {table['profile']!r}: must be one of {', '.join(profiles.PROFILES)}")
    return table


class Config:
    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        self.data = data
        self.path = path
        self.data["build"] = check_build(read_table(data.get("build", {}), "build", BUILD_DEFAULTS,
                                                    types=_BUILD_TYPES))

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Config":
        p = Path(path) if path else DEFAULT_CONFIG
        if not p.is_file():
            if path:
                raise ConfigError(f"config file {p} does not exist")
            return cls({}, None)
        return cls(read_toml(p, "config file"), p)

    @property
    def build(self) -> dict[str, Any]:
        return self.data["build"]

    def __getitem__(self, key: str) -> Any:
        return self.build[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.build.get(key, default)

    @property
    def profile(self) -> str:
        """The build's profile, ``preview`` or ``full`` (``auto`` resolved for this machine)."""
        return profiles.resolve(self.build["profile"], self.build["device"])

    def explicit(self, name: str) -> set[str]:
        """The keys of stage table ``[name]`` that the config file sets itself."""
        return set(self.data.get(name, {}))

    def table(self, name: str, defaults: Mapping[str, Any], **checks: Any) -> dict[str, Any]:
        """The stage table ``[name]`` checked against ``defaults`` (see :func:`read_table`), with the
        profile's settings under the config file's own values."""
        sized = {**defaults, **{k: v for k, v in profiles.settings(self.profile, name).items() if k in defaults}}
        return read_table(copy.deepcopy(self.data.get(name, {})), name, sized, **checks)

    def profile_line(self, name: str, used: Mapping[str, Any]) -> str:
        """The line a page shows under numbers of stage ``name``: which profile built them, its n's."""
        return profiles.describe(self.profile, name, used, self.explicit(name))

    def model_section(self, model: str) -> dict[str, Any]:
        return copy.deepcopy(self.data.get("models", {}).get(model, {}))

    def override(self, **kw: Any) -> "Config":
        """Apply CLI overrides (None means 'not given'), checked like the file's values."""
        given = {k: v for k, v in kw.items() if v is not None}
        self.data["build"] = check_build(read_table({**self.build, **given}, "build", BUILD_DEFAULTS,
                                                    types=_BUILD_TYPES))
        return self

    def resolve_path(self, value: str | Path) -> Path:
        """Relative paths in the config are relative to the repository root; ``data:<set>/<sub>`` names a
        data set's folder wherever it was fetched or mirrored (:func:`generator.datasets.resolve_data_path`)."""
        from . import datasets

        def plain(v: str | Path) -> Path:
            p = Path(v)
            return p if p.is_absolute() else (ROOT / p)

        try:
            return datasets.resolve_data_path(str(value), plain)
        except datasets.DataError as e:
            raise ConfigError(str(e)) from None
