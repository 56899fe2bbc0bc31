"""The package's sides and the one direction of imports between them (../shared/DESIGN.md), checked
on the AST of every module, like the notebook rules: a forbidden import fails here, naming the file."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lorakit"

# side -> the sides it may import (besides itself). `cli` is the composition root: the command line is
# the one module that knows every side, and no side imports it.
# The ground floor, each module importing only those listed before it: env (every environment read),
# files (atomic writes, JSON), params (the parameter language), config (RunConfig), record (the run record),
# scoring (normalizers, error counts), display (progress, number formats, tables). Every side stands on it.
GROUND = {"env", "files", "params", "config", "record", "scoring", "display"}
ALLOWED = {
    "env": set(),
    "files": set(),
    "scoring": set(),
    "display": {"env"},
    "params": {"env"},
    "config": {"env", "params"},
    "record": {"env", "files", "params", "config"},
    "experiment": GROUND,
    "analysis": GROUND,
    "deploy": {"experiment"} | GROUND,
    "launch": GROUND,
    "demo": {"env", "config", "display"},
    "cli": {"experiment", "analysis", "deploy", "launch", "demo"} | GROUND,
    "__init__": {"config", "experiment", "analysis", "deploy"},
    "__main__": {"cli"},
}
NO_TORCH = {"analysis", "launch", "demo", "cli"} | GROUND  # the analysis notebook starts in a second


def side_of(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package).parts
    return parts[0] if len(parts) > 1 else path.stem


def imported_sides(path: Path, package: Path = PACKAGE) -> dict[str, int]:
    """{side or top module imported from lorakit: first line} plus {"torch": line} when torch is imported."""
    tree = ast.parse(path.read_text())
    here = list(path.relative_to(package).parts[:-1])
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here[: len(here) - node.level + 1]
                module = ".".join(["lorakit", *base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names = [module] if module != "lorakit" else [f"lorakit.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "lorakit" and len(parts) > 1:
                found.setdefault(parts[1], node.lineno)
            elif parts[0] == "torch":
                found.setdefault("torch", node.lineno)
    return found


def violations(package: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        side = side_of(path, package)
        for target, line in imported_sides(path, package).items():
            if target == "torch":
                if side in NO_TORCH:
                    out.append(f"{path.relative_to(package.parent)}:{line}: {side} imports torch")
            elif target != side and target not in ALLOWED.get(side, set()):
                out.append(f"{path.relative_to(package.parent)}:{line}: {side} imports {target}")
    return out


def test_the_sides_are_visible_from_the_folder_listing():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")} == {
        "experiment", "analysis", "deploy", "launch", "demo"}
    assert {p.name for p in PACKAGE.glob("*.py")} == {"__init__.py", "__main__.py", "cli.py", *(f"{m}.py" for m in GROUND)}


def test_imports_follow_one_direction():
    assert violations() == []


@pytest.mark.parametrize("side, line, expected", [
    ("analysis", "from ..experiment.evaluate import normalize", "analysis imports experiment"),
    ("analysis", "import torch", "analysis imports torch"),
    ("launch", "from lorakit.analysis import matrix", "launch imports analysis"),
    ("experiment", "from lorakit import cli", "experiment imports cli"),
    ("record", "from .experiment import checkpoint", "record imports experiment"),
])
def test_a_forbidden_import_is_reported(tmp_path, side, line, expected):
    """The checker itself: a copy of the package with one forbidden import added fails, naming it."""
    copy = tmp_path / "lorakit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "record.py" if side == "record" else copy / side / "added.py"
    target.write_text(target.read_text() + "\n" + line + "\n" if target.exists() else line + "\n")
    found = violations(copy)
    assert len(found) == 1 and found[0].endswith(expected), found


def test_no_environment_reads_outside_env():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() == "env.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and getattr(node.value, "id", "") == "os":
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert offenders == []


def test_functions_fit_on_a_screen():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(PACKAGE.parent)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_the_ground_floor_modules_stay_short():
    """Issue 25: config.py is RunConfig (the parameter language is params.py's, the record's comparisons record.py's);
    a ground-floor module past 300 lines is a drawer again."""
    long = {name: n for name in sorted(GROUND) if (n := len((PACKAGE / f"{name}.py").read_text().splitlines())) > 300}
    assert long == {}


def private_imports(package: Path = PACKAGE) -> list[str]:
    """`from lorakit.x import _name` anywhere in the package (a private name crossing modules)."""
    out = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("lorakit")):
                out += [f"{path.relative_to(package.parent)}:{node.lineno}: {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_private_name_crosses_a_module(tmp_path):
    assert private_imports() == []
    copy = tmp_path / "lorakit"  # the checker itself: one private import added is found
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "analysis" / "added.py").write_text("from .runs import _read_json\n")
    assert private_imports(copy) == ["lorakit/analysis/added.py:1: _read_json"]
