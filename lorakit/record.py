"""The run record on disk: `executed/<run_id>/` with config.json, history.jsonl, metrics.json and
predictions/. Every whole-file write goes through files.py (atomic: a killed run never leaves half a JSON
file); history is appended line by line and repaired on resume.
See docs/run_record.md for the format.

This module is the contract between the sides: the experiment writes a record, the analysis and the
launchers read it, and nothing else reads metrics.json. It also holds the few definitions both sides
need to agree on: whether a live RunConfig is the run a folder recorded (`result_config`,
`check_same_run`), which metrics hold each eval set's WERs, and the guardrail comparison.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .config import NAMING_FIELDS, RunConfig
from .files import json_or_none, jsonable, read_json, read_jsonl, write_json, write_jsonl
from .params import ConfigError


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    # package metadata, not imports: importing papermill (nbformat, jsonschema) cost ~8 s per run under load
    for name in ("torch", "transformers", "peft", "accelerate", "jiwer", "numpy", "papermill", "lorakit"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # a missing optional package is just not listed
            pass
    return out


def git_sha(root: Path) -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def today() -> str:
    return dt.date.today().isoformat()


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


class RunRecord:
    """One run's folder. Only the main process writes (see `train.run`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.predictions = self.folder / "predictions"

    @property
    def metrics_path(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def history_path(self) -> Path:
        return self.folder / "history.jsonl"

    def metrics(self) -> dict:
        return read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def update_metrics(self, **values: Any) -> dict:
        data = {**self.metrics(), **values}
        write_json(self.metrics_path, data)
        return data

    def history(self) -> list[dict]:
        return read_jsonl(self.history_path) if self.history_path.exists() else []

    def append_history(self, row: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.history_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_history(self, step: int) -> None:
        """Keep only rows up to `step` (on resume: rows written after the last checkpoint are redone), and
        no adapter-scaling rows ("alpha"): they come after training and are redone with it."""
        rows = [r for r in self.history() if r.get("step", 0) <= step and "alpha" not in r]
        write_jsonl(self.history_path, rows)

    def write_predictions(self, split: str, tag: str, rows: list[dict]) -> Path:
        path = self.predictions / f"{split}_{tag}.jsonl"
        write_jsonl(path, rows)
        return path


def run_command(cfg: RunConfig) -> str:
    """How a run was started: `cfg.command` when the launcher said so (`lorakit run ...`), else the
    papermill command that reproduces it."""
    if cfg.command:
        return cfg.command
    args = " ".join(f"-p {k} {json.dumps(v) if isinstance(v, str) and (' ' in v or not v) else v}" for k, v in sorted(cfg.deltas().items()))
    return f"papermill notebooks/train.ipynb executed/run.ipynb {args}".strip()


# --- reading a record (the one tolerant reader of metrics.json) -----------------------------------
def read_metrics(folder: Path) -> dict | None:
    """A run folder's metrics.json; None when there is none, {"status": "corrupt"} when it does not parse
    (writes are atomic, so that is damage from outside, not a run caught mid-write)."""
    try:
        data = json_or_none(Path(folder) / "metrics.json")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {"status": "corrupt"}
    return data if isinstance(data, dict) or data is None else {"status": "corrupt"}


def recorded_config(folder: Path) -> dict | None:
    """The parameters a run folder was recorded with (config.json's "config"); None when it has none."""
    path = Path(folder) / "config.json"
    data = json_or_none(path)
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f"{path}: not a lorakit config.json (no 'config' mapping)")
    return data["config"]


def run_status(folder: Path) -> str | None:
    """finished / running / failed / interrupted / corrupt, or None when the folder holds no record."""
    metrics = read_metrics(folder)
    return None if metrics is None else metrics.get("status")


# --- a live config against a recorded one: the same run? ------------------------------------------
# What a record written before a parameter existed ran with, where that is not the parameter's default: such runs
# reported on the clips that chose (no dev/test split), so resuming one now is a changed configuration, not test_split 0.5.
BEFORE_THEY_EXISTED = {"test_split": 0.0}


def result_config(values: dict[str, Any]) -> dict[str, Any]:
    """What shapes a run's result, from a config as `RunConfig.to_dict()` gives it or a record's config.json
    "config" holds it: the naming fields (`config.NAMING_FIELDS`) dropped, a parameter the record predates taken
    as its default, and values as JSON stores them (so a recorded run and a live config compare equal)."""
    merged = {**RunConfig().to_dict(), **BEFORE_THEY_EXISTED, **values}
    return json.loads(json.dumps({k: v for k, v in merged.items() if k not in NAMING_FIELDS}, sort_keys=True, default=str))


def config_changes(cfg: RunConfig, recorded: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{parameter: (recorded value, cfg's value)} for every parameter that shapes the result and differs
    from `recorded` (a run's config.json "config"); a parameter the record predates counts as its default."""
    now, then = result_config(cfg.to_dict()), result_config(recorded)
    return {k: (then.get(k), v) for k, v in now.items() if then.get(k) != v}


def check_same_run(cfg: RunConfig, folder: Path) -> None:
    """Refuse to continue (resume, or skip as finished) the run recorded in `folder` with another configuration
    than `cfg`: resuming would mix two recipes in one record. Names every changed parameter; a folder without
    config.json passes."""
    recorded = recorded_config(folder)
    changed = config_changes(cfg, recorded) if recorded is not None else {}
    if changed:
        what = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ConfigError(f"run {folder.name!r} in {folder} was recorded with another configuration ({what}); "
                          "choose another run_id, or start it afresh with `lorakit run --force` (or delete the folder)")


# --- what both sides agree on --------------------------------------------------------------------
SPLIT_KEYS = {  # eval set -> (baseline WER key, tuned WER key) in metrics.json and matrix rows
    "domain": ("baseline_wer", "tuned_wer"),
    "heldout": ("heldout_baseline_wer", "heldout_tuned_wer"),
}


def delta_pts(base: float | None, tuned: float | None) -> float | None:
    """tuned - baseline WER in points (negative is better); None when either is missing."""
    return None if base is None or tuned is None else (tuned - base) * 100


# The guardrail: ONE comparison, used by checkpoint selection (experiment/best.py), the analysis verdict
# (analysis/stats.py) and the search constraint (launch/search.py). Deltas are rounded before they are compared:
# WERs are ratios of word counts, so 0.0469 - 0.0449 is 0.20000000000000018 pt in floats, which must equal a
# 0.2-pt guardrail. 1e-6 pt is far above float error (~1e-14 pt) and far below one word in a million (1e-4 pt).
PTS_DECIMALS = 6  # WER points are compared at this many decimals


def guardrail_excess(regression_pts: float, guardrail_pts: float) -> float:
    """How far a heldout regression (points, tuned - baseline) exceeds the guardrail (points), rounded
    to `PTS_DECIMALS`: <= 0 passes. Optuna's constraint takes this value as it is (feasible when <= 0)."""
    return round(regression_pts - guardrail_pts, PTS_DECIMALS) + 0.0  # + 0.0: no -0.0 in a record


def within_guardrail(regression_pts: float | None, guardrail_pts: float) -> bool:
    """Whether a heldout regression (points) honours the guardrail; a missing one (no heldout set) does."""
    return regression_pts is None or guardrail_excess(regression_pts, guardrail_pts) <= 0
