"""Build stages: glue between the cache, the methods and metrics, ``render`` and the pages.

A stage is a module ``generator/stages/<name>.py`` with

``run(ctx: BuildContext) -> None``
    asks ``ctx.cache`` for results (computing the misses with ``methods/`` or
    ``metrics/``), hands arrays to :mod:`generator.render` and sections to the page
    writer (``ctx.section`` / ``ctx.page``).
``PROVIDES: tuple[str, ...]``
    artifacts the stage puts on the context with ``ctx.provide(name, value)``.
``NEEDS: tuple[str, ...]``
    artifacts it cannot run without (``ctx.need(name)``): a stage that provides them
    must be configured *before* it.
``USES: tuple[str, ...]``
    artifacts it shows when they exist (``ctx.artifact(name)``): a stage that provides
    one, when configured, must run before it.

:func:`plan` checks a configured order against these declarations before any work
starts and raises one :class:`~generator.config.ConfigError` line when it cannot work.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Sequence

from ..config import ConfigError

#: every stage, in the order the default build runs them
STAGES = ("overview", "activity", "attribution", "compare", "findings", "dgn_am", "atlas", "home")


def load(name: str) -> ModuleType:
    if name not in STAGES:
        raise ConfigError(f"[build].stages: unknown stage {name!r}; known: {', '.join(STAGES)}")
    return importlib.import_module(f"{__name__}.{name}")


def plan(names: Sequence[str]) -> list[ModuleType]:
    """The stage modules for ``names``, after checking that every NEEDS / USES is
    provided by a stage that runs earlier."""
    modules = [load(n) for n in names]
    if len(set(names)) != len(names):
        dup = next(n for n in names if list(names).count(n) > 1)
        raise ConfigError(f"[build].stages: stage {dup!r} is listed twice")
    providers = {a: n for n in STAGES for a in getattr(load(n), "PROVIDES", ())}
    position = {n: i for i, n in enumerate(names)}
    for i, (name, mod) in enumerate(zip(names, modules)):
        for artifact, hard in [(a, True) for a in getattr(mod, "NEEDS", ())] + \
                              [(a, False) for a in getattr(mod, "USES", ())]:
            src = providers.get(artifact)
            if src is None:  # a declaration error in the code, not in the config
                raise RuntimeError(f"stage {name!r} declares {artifact!r}, which no stage provides")
            if src not in position:
                if hard:
                    raise ConfigError(f"[build].stages: stage {name!r} needs {artifact!r} from stage {src!r}; "
                                      f"add {src!r} before {name!r}")
                continue
            if position[src] > i:
                raise ConfigError(f"[build].stages: stage {name!r} uses {artifact!r} from stage {src!r}, so "
                                  f"{src!r} must come before {name!r} (order given: {', '.join(names)})")
    return modules
