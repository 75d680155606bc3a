"""Import rules of the package map (generator/__init__.py), checked on the source with ast."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "generator"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _file_of(module: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (anywhere in the file), relative imports resolved; for
    ``from package import name`` both the package and ``package.name`` when that is a module."""
    tree = ast.parse(path.read_text())
    here = _module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]  # the package the module lives in
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            for alias in node.names:
                if _file_of(f"{module}.{alias.name}") is not None:
                    found.add(f"{module}.{alias.name}")
    return found


def _is_script(module: str) -> bool:
    """A command-line script: a module of this package that imports argparse."""
    path = _file_of(module) if module.startswith("generator") else None
    return path is not None and "argparse" in imported_modules(path)


def test_import_resolution_sees_relative_and_absolute_imports():
    found = imported_modules(PACKAGE / "stages" / "atlas.py")
    assert {"generator.image_folder", "generator.metrics.unit_stats", "generator.render", "torch"} <= found
    assert _is_script("generator.deepsim.evaluate") and _is_script("generator.cli")
    assert not _is_script("generator.deepsim.dgn_am")


def test_methods_do_not_import_deepsim():
    offenders = {path.name: sorted(m for m in imported_modules(path) if m.startswith("generator.deepsim"))
                 for path in sorted((PACKAGE / "methods").glob("*.py"))}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_no_stage_imports_a_command_line_script():
    offenders = {path.name: sorted(m for m in imported_modules(path) if _is_script(m))
                 for path in sorted((PACKAGE / "stages").glob("*.py"))}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_forward_hooks_go_through_capture_outputs():
    """Hand-written forward hooks in the generative / atlas side: none beside capture_outputs."""
    files = [PACKAGE / "methods" / "objectives.py", PACKAGE / "methods" / "pixel_am.py",
             PACKAGE / "methods" / "neuron_deconv.py", PACKAGE / "receptive_field.py",
             PACKAGE / "metrics" / "unit_stats.py", PACKAGE / "image_folder.py",
             *sorted((PACKAGE / "deepsim").glob("*.py")), PACKAGE / "stages" / "atlas.py",
             PACKAGE / "stages" / "dgn_am.py", PACKAGE / "stages" / "overview.py"]
    assert [f.name for f in files if "register_forward_hook" in f.read_text()] == []
