"""Build configuration: a TOML file (default ``data/config.toml``) plus CLI overrides.

The ``[build]`` table drives the pipeline; every stage reads its own table
(``[activity]``, ``[attribution]``, ``[findings]``, ``[atlas]``, ``[dgn_am]``) through
:meth:`Config.section`, and a model can have its own table ``[models.<name>]``
(e.g. ``layers = ["conv1", "conv5"]``).
"""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

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
    "stages": ["overview", "activity"],
    "image_limit": 0,
}


class Config:
    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        self.data = data
        self.path = path
        build = dict(BUILD_DEFAULTS)
        build.update(data.get("build", {}))
        self.data["build"] = build

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Config":
        p = Path(path) if path else DEFAULT_CONFIG
        if not p.is_file():
            if path:
                raise FileNotFoundError(f"config file {p} does not exist")
            return cls({}, None)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{p}: invalid TOML ({e})") from None
        return cls(data, p)

    @property
    def build(self) -> dict[str, Any]:
        return self.data["build"]

    def __getitem__(self, key: str) -> Any:
        return self.build[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.build.get(key, default)

    def section(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.data.get(name, {}))

    def model_section(self, model: str) -> dict[str, Any]:
        return copy.deepcopy(self.data.get("models", {}).get(model, {}))

    def override(self, **kw: Any) -> "Config":
        """Apply CLI overrides (None means 'not given')."""
        for k, v in kw.items():
            if v is not None:
                self.build[k] = v
        return self

    def resolve_path(self, value: str | Path) -> Path:
        """Relative paths in the config are relative to the repository root."""
        p = Path(value)
        return p if p.is_absolute() else (ROOT / p)
