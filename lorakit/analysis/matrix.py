"""The run matrix: one row per run (the old team's columns, then heldout, best step, adapter, deltas
with paired-bootstrap CIs, status, verdict), rendered as Markdown and CSV; and the seed-group table.
Every table the analysis shows goes through `record.markdown_table`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..config import format_lr
from ..record import SPLIT_KEYS, delta_pts, markdown_table
from .archive import write_archive
from .runs import PathLike, Run, _config_key, _folder_date, load_runs
from .stats import PredictionMismatch, paired_bootstrap, verdict


MATRIX_COLUMNS = [  # (row key, header); the first ten are the old team's table
    ("run_id", "Run ID"), ("date", "Date"), ("command", "Command"), ("dataset", "Dataset"),
    ("steps", "Steps"), ("lr", "LR"), ("manifest", "Manifest"), ("baseline_wer", "Baseline WER"),
    ("tuned_wer", "Tuned WER"), ("notes", "Notes"),
    ("heldout_baseline_wer", "Heldout Baseline WER"), ("heldout_tuned_wer", "Heldout Tuned WER"),
    ("best_step", "Best Step"), ("best_alpha", "Best α"), ("stop_reason", "Stop Reason"), ("adapter", "Adapter"),
    ("rank", "Rank"), ("domain_delta", "Domain Δ pts [95% CI]"),
    ("heldout_delta", "Heldout Δ pts [95% CI]"), ("status", "Status"), ("verdict", "Verdict"),
]
_CODE_KEYS = {"command", "dataset", "manifest"}  # shown in backticks, as the old table did


def matrix_row(run: Run, n_resamples: int = 2000, seed: int = 0) -> dict:
    """The raw matrix row of one run (numbers unformatted; no verdict yet)."""
    g = run.get
    notes = g("notes", "")
    if run.status == "failed" and run.metrics.get("error"):
        notes = f"{notes} Error: {run.metrics['error']}".strip()
    row = {
        "run_id": run.run_id, "date": g("date") or _folder_date(run.path),
        "command": g("command") or run.record.get("command"), "dataset": g("dataset"),
        "steps": g("steps") if run.metrics else (run.history[-1]["step"] if run.history else None),
        "lr": g("lr"), "manifest": g("manifest"), "baseline_wer": g("baseline_wer"),
        "tuned_wer": g("tuned_wer"), "notes": notes,
        "heldout_baseline_wer": g("heldout_baseline_wer"), "heldout_tuned_wer": g("heldout_tuned_wer"),
        "best_step": run.best_step(), "best_alpha": g("best_alpha"), "stop_reason": g("stop_reason"),
        "adapter": None if g("use_dora") is None else ("DoRA" if g("use_dora") else "LoRA"),
        "rank": g("lora_r"), "status": run.status, "error": None, "seed": g("seed"),
        "config_key": _config_key(run.config, ignore={"seed"}),
    }
    for split, (base_key, tuned_key) in SPLIT_KEYS.items():
        row[f"{split}_delta_pts"] = delta_pts(row[base_key], row[tuned_key])
        row[f"{split}_ci_low"] = row[f"{split}_ci_high"] = None
        if run.status != "finished" or split not in run.splits():
            continue
        try:
            ci = paired_bootstrap(run.predictions(split, "baseline"), run.predictions(split, "best"),
                                  n_resamples=n_resamples, seed=seed)
        except PredictionMismatch as e:
            row["error"] = f"{split} predictions: {e}"
            continue
        row[f"{split}_ci_low"], row[f"{split}_ci_high"] = ci.low_pts, ci.high_pts
    return row


@dataclass
class RunMatrix:
    """Matrix rows (raw values) plus the criteria their verdicts used; renders as Markdown."""

    rows: list[dict]
    criteria: dict = field(default_factory=dict)

    def markdown(self) -> str:
        if not self.rows:
            return "_No runs in the matrix._"
        table = markdown_table([{k: format_cell(k, r) for k, _ in MATRIX_COLUMNS} for r in self.rows],
                               MATRIX_COLUMNS)
        return f"{table}\n\n_Verdict criteria: {describe_criteria(**self.criteria)}._\n"

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def __repr__(self) -> str:
        return f"RunMatrix({len(self.rows)} runs; {describe_criteria(**self.criteria)})"

    def write(self, runs_dir: PathLike) -> list[Path]:
        """`run_matrix.md` and `run_matrix.csv` in `runs_dir`; nothing when there are no rows."""
        if not self.rows:
            return []
        runs_dir = Path(runs_dir)
        md, csv_path = runs_dir / "run_matrix.md", runs_dir / "run_matrix.csv"
        md.write_text(self.markdown())
        with open(csv_path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([h for _, h in CSV_COLUMNS])
            for r in self.rows:
                writer.writerow([_csv_cell(k, r) for k, _ in CSV_COLUMNS])
        return [md, csv_path]


CSV_COLUMNS = [c for c in MATRIX_COLUMNS if c[0] not in ("domain_delta", "heldout_delta", "verdict")
               ] + [("domain_delta_pts", "Domain Δ pts"), ("domain_ci_low", "Domain CI low"),
                    ("domain_ci_high", "Domain CI high"), ("heldout_delta_pts", "Heldout Δ pts"),
                    ("heldout_ci_low", "Heldout CI low"), ("heldout_ci_high", "Heldout CI high"),
                    ("verdict", "Verdict")]


def describe_criteria(min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float = 0.2,
                      require_ci: bool = True) -> str:
    ci = " with the paired-bootstrap 95% CI excluding 0" if require_ci else ""
    return (f"accept when domain WER drops by ≥ {min_domain_gain_pts:g} pt{ci} and heldout WER "
            f"rises by ≤ {max_heldout_regression_pts:g} pt")


def run_matrix(runs: Iterable[Run], min_domain_gain_pts: float = 1.0,
               max_heldout_regression_pts: float = 0.2, require_ci: bool = True,
               n_resamples: int = 2000, seed: int = 0) -> RunMatrix:
    """The matrix over non-archived runs: one row per run whatever its status, with verdicts."""
    criteria = dict(min_domain_gain_pts=min_domain_gain_pts,
                    max_heldout_regression_pts=max_heldout_regression_pts, require_ci=require_ci)
    rows = []
    for run in runs:
        if run.archived:
            continue
        row = matrix_row(run, n_resamples=n_resamples, seed=seed)
        row["verdict"] = verdict(row, **criteria)
        rows.append(row)
    return RunMatrix(rows, criteria)


def write_matrix(runs_dir: PathLike, **criteria: Any) -> list[Path]:
    """Load every run under `runs_dir` and write run_matrix.md/.csv and run_archive.md there
    (what `lorakit matrix` does); `criteria` go to `run_matrix`."""
    loaded = load_runs(runs_dir)
    paths = run_matrix(loaded, **criteria).write(runs_dir)
    archive = write_archive(loaded, runs_dir) if loaded else None
    return paths + ([archive] if archive else [])


def _fmt_delta(row: dict, split: str) -> str:
    d, low, high = (row.get(f"{split}_{k}") for k in ("delta_pts", "ci_low", "ci_high"))
    if d is None:
        return ""
    return f"{d:+.2f}" + ("" if low is None else f" [{low:+.2f}, {high:+.2f}]")


def format_cell(key: str, row: dict) -> str:
    """A matrix cell as the Markdown table shows it."""
    if key in ("domain_delta", "heldout_delta"):
        return _fmt_delta(row, key.split("_")[0])
    value = row.get(key)
    if value is None or value == "":
        return ""
    if key.endswith("_wer"):
        return f"{value:.4f}"
    if key == "lr":
        return format_lr(value)
    if key in _CODE_KEYS:
        return f"`{value}`"
    return str(value)


def _csv_cell(key: str, row: dict) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if key.endswith("_pts") or "_ci_" in key:
        return f"{value:.2f}"
    if key.endswith("_wer"):
        return f"{value:.4f}"
    return format_lr(value) if key == "lr" else str(value)


# --- seed groups --------------------------------------------------------------------------------
def _pm(mean: float | None, sd: float | None, digits: int, scale: float = 1.0) -> str:
    if mean is None:
        return ""
    return f"{mean * scale:.{digits}f}" + ("" if sd is None or math.isnan(sd) else f" ± {sd * scale:.{digits}f}")


SEED_COLUMNS = [("runs", "runs"), ("seeds", "seeds"), ("baseline_wer", "baseline WER"), ("tuned_wer", "tuned WER"),
                ("domain_delta_pts", "domain Δ pts"), ("heldout_baseline_wer", "heldout baseline WER"),
                ("heldout_tuned_wer", "heldout tuned WER"), ("heldout_delta_pts", "heldout Δ pts"),
                ("per_seed", "verdict per seed"), ("verdict", "verdict")]


def seeds_markdown(groups: Sequence[dict]) -> str:
    """`aggregate_seeds` output as a Markdown table (WERs as fractions, deltas in points, mean ± sd)."""
    if not groups:
        return "_No seed groups yet (finished runs that differ only in seed)._"
    rows = [{"runs": ", ".join(g["runs"]), "seeds": ", ".join(map(str, g["seeds"])),
             **{key: _pm(g[f"{key}_mean"], g[f"{key}_sd"], 2 if key.endswith("_pts") else 4) for key, _ in SEED_COLUMNS[2:8]},
             "per_seed": "; ".join(f"s{s}: {v}" for s, v in g["verdicts"].items()), "verdict": g["verdict"]}
            for g in groups]
    return markdown_table(rows, SEED_COLUMNS)
