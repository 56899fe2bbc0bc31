"""Run records read back: loading `executed/<run_id>/`, the run matrix with paired-bootstrap CIs
and verdicts, seed aggregation, sweep grouping, and the archive.

The record format is docs/run_record.md. WERs are fractions everywhere; deltas are percentage
points, `(tuned - baseline) * 100`, so a domain gain shows as a negative delta.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lorakit.config import project_root
from lorakit.records import read_json, read_jsonl, write_json

PathLike = str | os.PathLike

STALE_AFTER_S = 3600.0  # a "running" record untouched this long is reported as interrupted
_EPS_PTS = 1e-9  # float slack when comparing deltas with thresholds (0.0469-0.0449 != 0.2 pt)


# ---------------------------------------------------------------------------------------------
# Paths


def project_path(path: PathLike) -> Path:
    """`path` if absolute, else relative to the project root (`config.project_root`), so notebook
    parameters mean the same under papermill (cwd: repo) and nbmake/JupyterLab (cwd: notebooks/)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


# ---------------------------------------------------------------------------------------------
# Loading a run record


def _read_json(path: Path) -> dict | None:
    try:
        return read_json(path)
    except FileNotFoundError:
        return None


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
        return [h for h in self.history if h.get("kind") == "eval"]

    @property
    def train_log(self) -> list[dict]:
        return [h for h in self.history if h.get("kind") == "train"]

    def best_step(self) -> int | None:
        if self.metrics.get("best_step") is not None:
            return self.metrics["best_step"]
        best = [e["step"] for e in self.evals if e.get("best")]
        return best[-1] if best else None

    def predictions_path(self, split: str, tag: str) -> Path:
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
    metrics = _read_json(path / "metrics.json") or {}
    record = _read_json(path / "config.json") or {}
    history = read_jsonl(path / "history.jsonl") if (path / "history.jsonl").is_file() else []
    status = metrics.get("status") or "running"
    if status == "running" and time.time() - _newest_mtime(path) > stale_after_s:
        status = "interrupted"
    return Run(run_id=metrics.get("run_id") or path.name, path=path, status=status,
               metrics=metrics, config=record.get("config") or {}, record=record,
               history=history, archived=_read_json(path / "ARCHIVED"))


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
    return sorted(runs, key=lambda r: (str(r.get("date") or _folder_date(r.path)), r.run_id))


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


def _folder_date(path: Path) -> str:
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


# ---------------------------------------------------------------------------------------------
# Paired bootstrap


class PredictionMismatch(ValueError):
    """Baseline and tuned predictions that cannot be paired utterance by utterance."""


def pair_predictions(baseline: Sequence[dict], tuned: Sequence[dict]) -> list[tuple[dict, dict]]:
    """Join two prediction lists on `id`, in baseline order; refuse anything that does not pair."""
    def by_id(rows, name):
        out = {}
        for r in rows:
            if r["id"] in out:
                raise PredictionMismatch(f"{name} predictions repeat id {r['id']!r}")
            out[r["id"]] = r
        return out

    base, tune = by_id(baseline, "baseline"), by_id(tuned, "tuned")
    only_b, only_t = sorted(base.keys() - tune.keys()), sorted(tune.keys() - base.keys())
    if only_b or only_t:
        raise PredictionMismatch(
            "baseline and tuned predictions cover different utterances: "
            f"{len(only_b)} only in baseline {only_b[:3]}, {len(only_t)} only in tuned {only_t[:3]}")
    for uid, b in base.items():
        if b["ref_words"] != tune[uid]["ref_words"]:
            raise PredictionMismatch(f"utterance {uid!r} has {b['ref_words']} reference words in "
                                     f"baseline but {tune[uid]['ref_words']} in tuned")
    return [(b, tune[uid]) for uid, b in base.items()]


@dataclass(frozen=True)
class DeltaCI:
    """Corpus WER delta (tuned - baseline) in points with its percentile bootstrap CI."""

    delta_pts: float
    low_pts: float
    high_pts: float
    n_utterances: int
    n_resamples: int

    def excludes_zero(self) -> bool:
        return self.high_pts < 0 or self.low_pts > 0


def paired_bootstrap(baseline: Sequence[dict], tuned: Sequence[dict], n_resamples: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> DeltaCI:
    """Paired bootstrap over utterances of the corpus-WER delta.

    Each resample draws utterance indices with replacement and scores baseline and tuned on the
    same draw: WER = sum(errors) / sum(ref_words). The CI is the percentile interval.
    """
    pairs = pair_predictions(baseline, tuned)
    if not pairs:
        raise PredictionMismatch("no utterances to bootstrap")
    err_b = np.array([b["errors"] for b, _ in pairs], dtype=np.int64)
    err_t = np.array([t["errors"] for _, t in pairs], dtype=np.int64)
    words = np.array([b["ref_words"] for b, _ in pairs], dtype=np.int64)
    diff = err_t - err_b
    rng = np.random.default_rng(seed)
    n = len(pairs)
    deltas = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)  # bounds memory at ~16 MB of indices
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        w = words[idx].sum(axis=1)
        deltas[start:stop] = diff[idx].sum(axis=1) / np.maximum(w, 1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    point = diff.sum() / max(words.sum(), 1)
    return DeltaCI(float(point * 100), float(low * 100), float(high * 100), n, n_resamples)


# ---------------------------------------------------------------------------------------------
# Verdict


def verdict(row: dict, min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float = 0.2,
            require_ci: bool = True) -> str:
    """"accept", "reject (why)", "inconclusive (why)" or "n/a (status)" for a matrix row.

    Accept needs: domain WER down by at least `min_domain_gain_pts` (and, with `require_ci`,
    a domain CI entirely below zero) and heldout WER up by at most `max_heldout_regression_pts`.
    """
    if row.get("status") != "finished":
        return f"n/a ({row.get('status')})"
    if row.get("error"):
        return f"inconclusive ({row['error']})"
    d, h = row.get("domain_delta_pts"), row.get("heldout_delta_pts")
    if d is None:
        return "inconclusive (no domain WER)"
    reasons = []
    if -d < min_domain_gain_pts - _EPS_PTS:
        reasons.append(f"domain gain {0.0 - d:.2f} pt < {min_domain_gain_pts:g}")  # 0.0 - 0.0: no "-0.00"
    if h is not None and h > max_heldout_regression_pts + _EPS_PTS:
        reasons.append(f"heldout regression {h:.2f} pt > {max_heldout_regression_pts:g}")
    if reasons:
        return f"reject ({'; '.join(reasons)})"
    if h is None:
        return "inconclusive (no heldout WER)"
    if require_ci:
        low, high = row.get("domain_ci_low"), row.get("domain_ci_high")
        if low is None:
            return "inconclusive (no domain predictions for a CI)"
        if high >= 0:
            return f"inconclusive (domain CI [{low:+.2f}, {high:+.2f}] includes 0)"
    return "accept"


# ---------------------------------------------------------------------------------------------
# The run matrix

MATRIX_COLUMNS = [  # (row key, header); the first ten are the old team's table
    ("run_id", "Run ID"), ("date", "Date"), ("command", "Command"), ("dataset", "Dataset"),
    ("steps", "Steps"), ("lr", "LR"), ("manifest", "Manifest"), ("baseline_wer", "Baseline WER"),
    ("tuned_wer", "Tuned WER"), ("notes", "Notes"),
    ("heldout_baseline_wer", "Heldout Baseline WER"), ("heldout_tuned_wer", "Heldout Tuned WER"),
    ("best_step", "Best Step"), ("stop_reason", "Stop Reason"), ("adapter", "Adapter"),
    ("rank", "Rank"), ("domain_delta", "Domain Δ pts [95% CI]"),
    ("heldout_delta", "Heldout Δ pts [95% CI]"), ("status", "Status"), ("verdict", "Verdict"),
]
_CODE_KEYS = {"command", "dataset", "manifest"}  # shown in backticks, as the old table did


def _delta(base: float | None, tuned: float | None) -> float | None:
    return None if base is None or tuned is None else (tuned - base) * 100


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
        "best_step": run.best_step(), "stop_reason": g("stop_reason"),
        "adapter": None if g("use_dora") is None else ("DoRA" if g("use_dora") else "LoRA"),
        "rank": g("lora_r"), "status": run.status, "error": None, "seed": g("seed"),
        "config_key": _config_key(run.config, ignore={"seed"}),
    }
    for split, base_key, tuned_key in [("domain", "baseline_wer", "tuned_wer"),
                                       ("heldout", "heldout_baseline_wer", "heldout_tuned_wer")]:
        row[f"{split}_delta_pts"] = _delta(row[base_key], row[tuned_key])
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


NAMING_FIELDS = {"run_id", "notes"}  # name or describe a run; not part of what was tried


def _config_key(config: dict, ignore: Iterable[str] = ()) -> str:
    """The config as comparable text, without the naming fields and `ignore`."""
    drop = NAMING_FIELDS | set(ignore)
    return json.dumps({k: v for k, v in config.items() if k not in drop}, sort_keys=True, default=str)


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


def format_lr(lr: float | None) -> str:
    """1e-05 -> '1e-5', 0.00025 -> '2.5e-4', as the old table wrote learning rates."""
    if lr is None:
        return ""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


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


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub Markdown table; `|` and newlines inside cells are escaped."""
    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Seeds and sweeps


def sweep_groups(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
    """Groups of runs whose configs differ in exactly one field: ("lr", [runs]) is an LR sweep,
    ("use_dora", [runs]) LoRA against DoRA. Runs without a config are left out."""
    with_config = [r for r in runs if r.config]
    keys = sorted({k for r in with_config for k in r.config} - NAMING_FIELDS)
    groups = []
    for key in keys:
        by_rest: dict[str, list[Run]] = {}
        for r in with_config:
            by_rest.setdefault(_config_key(r.config, ignore={key}), []).append(r)
        for members in by_rest.values():
            if len({json.dumps(r.config.get(key), default=str) for r in members}) > 1:
                groups.append((key, sorted(members, key=lambda r: _sort_key(r.config.get(key)))))
    return groups


def _sort_key(value: Any) -> tuple:
    """Numbers (and booleans) in numeric order before anything else, which sorts as text."""
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


# ---------------------------------------------------------------------------------------------
# Archive

ARCHIVE_COLUMNS = [("run_id", "Run ID"), ("archived", "Archived"), ("reason", "Reason"),
                   ("status", "Status"), ("date", "Run Date"), ("baseline_wer", "Baseline WER"),
                   ("tuned_wer", "Tuned WER"), ("notes", "Notes")]


def archive_run(run_dir: PathLike, reason: str, date: str | None = None) -> Path:
    """Archive a run: it leaves the matrix and is listed in the archive table with `reason`."""
    run_dir = Path(run_dir)
    if not reason or not reason.strip():
        raise ValueError("archiving a run needs a reason")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder {run_dir}")
    path = run_dir / "ARCHIVED"
    write_json(path, {"reason": reason.strip(), "date": date or dt.date.today().isoformat()})
    return path


def unarchive_run(run_dir: PathLike) -> None:
    """Bring an archived run back into the matrix."""
    path = Path(run_dir) / "ARCHIVED"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not archived")
    path.unlink()


def archive_requests(runs_dir: PathLike, archive_run_id: str = "", reason: str = "",
                     unarchive_run_id: str = "") -> str:
    """Apply the notebook's archive parameters (empty = nothing to do); says what it did."""
    done = []
    if archive_run_id:
        archive_run(Path(runs_dir) / archive_run_id, reason)
        done.append(f"archived {archive_run_id}: {reason.strip()}")
    if unarchive_run_id:
        unarchive_run(Path(runs_dir) / unarchive_run_id)
        done.append(f"unarchived {unarchive_run_id}")
    return "; ".join(done) or "No archive changes requested."


def archive_table(runs: Iterable[Run]) -> list[dict]:
    return [{"run_id": r.run_id, "archived": r.archived.get("date"), "reason": r.archived.get("reason"),
             "status": r.status, "date": r.get("date"), "baseline_wer": format_cell("baseline_wer", r.metrics),
             "tuned_wer": format_cell("tuned_wer", r.metrics), "notes": r.get("notes", "")}
            for r in runs if r.archived]


def archive_markdown(runs: Iterable[Run]) -> str:
    rows = archive_table(runs)
    return markdown_table(rows, ARCHIVE_COLUMNS) if rows else "_No archived runs._"


def write_archive(runs: Iterable[Run], runs_dir: PathLike) -> Path | None:
    """`run_archive.md` in `runs_dir` (skipped when the folder does not exist)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return None
    path = runs_dir / "run_archive.md"
    path.write_text(archive_markdown(runs) + "\n")
    return path
