"""Run records read back: `executed/<run_id>/` as `Run` objects (finished, failed, running or
interrupted), selecting and grouping them. Statistics are `stats.py`, the matrix `matrix.py`, the
archive `archive.py`.

The record format is docs/run_record.md. WERs are fractions everywhere; deltas are percentage
points, `(tuned - baseline) * 100`, so a domain gain shows as a negative delta.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..config import NAMING_FIELDS
from ..files import json_or_none, read_jsonl
from ..record import read_metrics, result_config

PathLike = str | os.PathLike

STALE_AFTER_S = 3600.0  # a "running" record untouched this long is reported as interrupted


# --- loading a run record ---------------------------------------------------------------------
@dataclass
class Run:
    """One run folder. `status` is finished / failed / running / interrupted."""

    run_id: str
    path: Path
    status: str
    metrics: dict  # metrics.json, {} when missing
    config: dict  # config.json["config"], {} when missing
    record: dict  # the whole config.json
    history: list[dict]
    archived: dict | None  # the ARCHIVED file: {"reason", "date"}

    def get(self, key: str, default: Any = None) -> Any:
        """A metrics.json field, falling back to config.json for runs that never wrote metrics."""
        value = self.metrics.get(key)
        if value is None:
            value = self.config.get(_CONFIG_FALLBACK.get(key, key))
        return default if value is None else value

    @property
    def evals(self) -> list[dict]:
        """The evaluations during training (not those of the best adapter at other scales)."""
        return [h for h in self.history if h.get("kind") == "eval" and "alpha" not in h]

    @property
    def scaling(self) -> list[dict]:
        """The alpha trade-off of the best adapter ({alpha, step, domain_wer, heldout_wer, chosen}; alpha 1
        first), [] when the run tried no scale."""
        return list(self.metrics.get("adapter_scaling") or [])

    @property
    def train_log(self) -> list[dict]:
        return [h for h in self.history if h.get("kind") == "train"]

    def selection_baseline(self, key: str) -> float | None:
        """A baseline WER (`baseline_wer`, `heldout_baseline_wer`) on the sets the evaluations during training
        used: the dev sets' when the run had test sets (`metrics["dev"]`), else the reported one."""
        dev = self.metrics.get("dev") or {}
        return dev.get(key) if dev else self.get(key)

    def best_step(self) -> int | None:
        if self.metrics.get("best_step") is not None:
            return self.metrics["best_step"]
        best = [e["step"] for e in self.evals if e.get("best")]
        return best[-1] if best else None

    def predictions_path(self, split: str, tag: str) -> Path:
        """The reported predictions (tags baseline, best) of a run with test sets are the test sets'
        (`<split>_test_<tag>.jsonl`); checkpoint tags (stepNNNNNN) are the dev sets' that chose."""
        if tag in ("baseline", "best"):
            split = (self.metrics.get("test_sets") or {}).get(split, split)
        return self.path / "predictions" / f"{split}_{tag}.jsonl"

    def has_predictions(self, split: str, tag: str = "best") -> bool:
        return self.predictions_path(split, tag).is_file()

    def predictions(self, split: str, tag: str) -> list[dict]:
        """`predictions/<split>_<tag>.jsonl`; split is domain/heldout, tag baseline/best/stepNNNNNN."""
        path = self.predictions_path(split, tag)
        if not path.is_file():
            raise FileNotFoundError(f"{self.run_id}: no predictions {path.name}")
        return read_jsonl(path)

    def splits(self) -> list[str]:
        """Splits with both baseline and best predictions."""
        return [s for s in ("domain", "heldout")
                if self.has_predictions(s, "baseline") and self.has_predictions(s, "best")]

    def manifest_path(self, split: str) -> str | None:
        return self.get("manifest" if split == "domain" else "heldout_manifest")


_CONFIG_FALLBACK = {"dataset": "train_manifest", "manifest": "domain_manifest"}
_RUN_FILES = ("metrics.json", "config.json", "history.jsonl", "run.ipynb")


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
            except FileNotFoundError:  # a temporary file replaced while we walk
                pass
    return newest


def load_run(path: PathLike, stale_after_s: float = STALE_AFTER_S) -> Run:
    """Read one run folder. Missing files give empty parts, never an exception."""
    path = Path(path)
    metrics = read_metrics(path) or {}
    record = json_or_none(path / "config.json") or {}
    history = read_jsonl(path / "history.jsonl") if (path / "history.jsonl").is_file() else []
    status = metrics.get("status") or "running"
    if status == "running" and time.time() - _newest_mtime(path) > stale_after_s:
        status = "interrupted"
    return Run(run_id=metrics.get("run_id") or path.name, path=path, status=status,
               metrics=metrics, config=record.get("config") or {}, record=record,
               history=history, archived=json_or_none(path / "ARCHIVED"))


def load_runs(runs_dir: PathLike, run_ids: Sequence[str] | str | None = None,
              include_archived: bool = True, stale_after_s: float = STALE_AFTER_S) -> list[Run]:
    """Every run folder under `runs_dir`, sorted by date then id.

    `run_ids` picks runs (a list, or a comma-separated string as `papermill -p` passes it);
    empty means all. An unknown id raises ValueError, so a typo does not shrink the analysis
    silently.
    """
    runs_dir = Path(runs_dir)
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and any((p / f).exists() for f in _RUN_FILES)) if runs_dir.is_dir() else []
    runs = [load_run(p, stale_after_s) for p in folders]
    if _id_list(run_ids):
        try:
            runs = select_runs(runs, run_ids)
        except ValueError as e:
            raise ValueError(f"{e} (no run record under {runs_dir})") from None
    if not include_archived:
        runs = active(runs)
    return sorted(runs, key=lambda r: (str(r.get("date") or folder_date(r.path)), r.run_id))


def select_runs(runs: Sequence[Run], run_ids: Sequence[str] | str | None) -> list[Run]:
    """The runs named in `run_ids` (list or comma-separated string), in that order."""
    by_id = {r.run_id: r for r in runs}
    missing = [i for i in _id_list(run_ids) if i not in by_id]
    if missing:
        raise ValueError(f"unknown run ids: {', '.join(missing)}")
    return [by_id[i] for i in _id_list(run_ids)]


def active(runs: Sequence[Run]) -> list[Run]:
    """The runs that are not archived."""
    return [r for r in runs if not r.archived]


def _id_list(run_ids: Sequence[str] | str | None) -> list[str]:
    if isinstance(run_ids, str):
        run_ids = run_ids.split(",")
    return [i.strip() for i in (run_ids or []) if i.strip()]


def folder_date(path: Path) -> str:
    return dt.date.fromtimestamp(path.stat().st_mtime).isoformat()


def describe(runs: Sequence[Run], runs_dir: PathLike) -> str:
    """One line on what was found, or how to get runs when there are none."""
    if not runs:
        return (f"No run records under {runs_dir} yet. Run `make demo`, or execute "
                "notebooks/train.ipynb with papermill, then re-run this notebook.")
    counts: dict[str, int] = {}
    for r in runs:
        key = "archived" if r.archived else r.status
        counts[key] = counts.get(key, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{len(runs)} run records under {runs_dir}: {parts}."


def config_key(config: dict, ignore: Iterable[str] = ()) -> str:
    """The config as comparable text: what shapes the result (`record.result_config`: no naming field, a
    parameter the record predates as its default), less `ignore`."""
    drop = set(ignore)
    return json.dumps({k: v for k, v in result_config(config).items() if k not in drop}, sort_keys=True, default=str)


def sweep_groups(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
    """Groups of runs whose configs differ in exactly one field: ("lr", [runs]) is an LR sweep,
    ("use_dora", [runs]) LoRA against DoRA. Runs without a config are left out."""
    with_config = [r for r in runs if r.config]
    keys = sorted({k for r in with_config for k in r.config} - NAMING_FIELDS)
    groups = []
    for key in keys:
        by_rest: dict[str, list[Run]] = {}
        for r in with_config:
            by_rest.setdefault(config_key(r.config, ignore={key}), []).append(r)
        for members in by_rest.values():
            if len({json.dumps(r.config.get(key), default=str) for r in members}) > 1:
                groups.append((key, sorted(members, key=lambda r: _sort_key(r.config.get(key)))))
    return groups


def _sort_key(value: Any) -> tuple:
    """Numbers (and booleans) in numeric order before anything else, which sorts as text."""
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


# --- shipped forms ------------------------------------------------------------------------------
PARITY_MD = Path("export") / "parity.md"  # written by `lorakit export` (lorakit/deploy/parity.py)


def parity_markdown(runs: Sequence[Run]) -> str:
    """Every run's parity report (unmerged adapter against merged and CTranslate2 forms), as
    `lorakit export` rendered it, headings moved under the notebook's section; then the finished runs without one."""
    parts, without = [], []
    for run in runs:
        path = run.path / PARITY_MD
        if path.exists():
            parts.append(re.sub(r"^# ", "### ", path.read_text(), flags=re.M).rstrip())
        elif run.status == "finished":
            without.append(run.run_id)
    if without:
        parts.append(f"No parity report for {', '.join(without)}: `lorakit export RUN --to merged` (or "
                     "`--to ct2 --quantization int8`) writes one to `executed/RUN/export/parity.md`.")
    return "\n\n".join(parts) if parts else "No runs."
