"""The lean install: `make demo` installs the base dependencies only (pyproject's `dependencies`), so
everything the demo executes must import and run without the extras (test, ray, bench, search, lab)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRA_ONLY = ("optuna", "ray", "pytest", "playwright", "datasets", "jupyterlab", "hypothesis", "nbmake", "tensorboard", "mlflow",
              "wandb")

# every module the demo's commands import (run -> train notebook, analysis notebook, demo-data, import-model),
# and the analysis notebook's search section with no study given
DEMO_PATH = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRA_ONLY!r}:
            raise ImportError(f"{{name}} is not in the base install")
sys.meta_path.insert(0, Block())
import lorakit, lorakit.cli, lorakit.launch.notebooks, lorakit.experiment.train, lorakit.demo.corpus
import lorakit.experiment.convert_ct2_whisper
from lorakit.analysis import archive, breakdown, browser, hallucination, plots, runs, stats, study_report, matrix
assert study_report.open_study("", "") is None and study_report.study_figures(None) == []
print("ok")
"""


def test_the_demo_path_runs_on_the_base_install_alone():
    proc = subprocess.run([sys.executable, "-c", DEMO_PATH], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_the_base_dependencies_hold_no_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]}
    assert not base & set(EXTRA_ONLY)
    extras = {d.split(">")[0].split("[")[0].strip() for deps in project["optional-dependencies"].values() for d in deps}
    assert {"optuna", "ray", "pytest", "jupyterlab"} <= extras
