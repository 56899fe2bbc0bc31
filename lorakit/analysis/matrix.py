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

from ..display import format_lr, format_pts, format_wer
from ..record import SPLIT_KEYS, delta_pts
from ..display import markdown_table
from .archive import write_archive
from .runs import PathLike, Run, config_key, folder_date, load_runs
from .hallucination import LOOP_MIN_REPEATS, RUNAWAY_RATIO, format_counts, format_truncated, run_hallucinations
from . import language_id
from .stats import (PROVISIONAL, PredictionMismatch, block_bootstrap, guardrail_checks, heldout_ci_high,
                    paired_bootstrap, speakers_of, verdict)


MATRIX_COLUMNS = [  # (row key, header); the first ten are the old team's table
    ("run_id", "Run ID"), ("date", "Date"), ("command", "Command"), ("dataset", "Dataset"),
    ("steps", "Steps"), ("lr", "LR"), ("manifest", "Manifest"), ("baseline_wer", "Baseline WER"),
    ("tuned_wer", "Tuned WER"), ("notes", "Notes"),
    ("heldout_baseline_wer", "Heldout Baseline WER"), ("heldout_tuned_wer", "Heldout Tuned WER"),
    ("best_step", "Best Step"), ("best_alpha", "Best α"), ("stop_reason", "Stop Reason"), ("adapter", "Adapter"),
    ("rank", "Rank"), ("domain_delta", "Domain Δ pts [95% CI]"),
    ("heldout_delta", "Heldout Δ pts [95% CI]"), ("status", "Status"), ("verdict", "Verdict"),
    # issue 15: speaker blocks, probability of improvement, both guardrail criteria, hallucinations
    ("domain_block", "Domain speaker-block CI"), ("domain_poi", "Domain P(improve)"),
    ("heldout_block", "Heldout speaker-block CI"), ("heldout_poi", "Heldout P(improve)"),
    ("heldout_point", "Heldout point"), ("heldout_ni", "Heldout NI"),
    ("hallucinations", "Hallucinations base→tuned"),
    ("truncated", "Cut at token limit base→tuned"),  # issue 26: hypotheses with no end-of-text token
    ("other_language", "Other-language answers base→tuned"),  # issue 31: identified as another language than the clip's
    # issue 15: which sets the numbers come from (test sets report, dev sets choose)
    ("reported_on", "Reported on"),
    # issue 13: real recordings, a sanity figure only (a dozen clips: too few for a CI or a verdict)
    ("real", "Real speech WER base→tuned (sanity)"),
]
_CODE_KEYS = {"command", "dataset", "manifest"}  # shown in backticks, as the old table did


CHOSEN_ON_REPORTED = "chosen on the reported set"


def chosen_on_reported(metrics: dict) -> list[str]:
    """The reported sets (domain, heldout) whose numbers are those of the set that chose the checkpoint:
    every one for a run with no test set (`reported_on` "selection", or a record from before it said),
    the heldout set of a run with a domain test set only and `test_split` 0 (`reported_on` "mixed")."""
    if not metrics or metrics.get("reported_on") == "test":
        return []
    sets = ["domain"] + (["heldout"] if metrics.get("heldout_baseline_wer") is not None else [])
    return [s for s in sets if s not in (metrics.get("test_sets") or {})]


def reported_on(metrics: dict) -> str:
    """Which sets the row's numbers come from: "test; chosen on dev (dev tuned: domain 0.1912, heldout 0.0610)",
    "test (split off domain, heldout at 0.5); chosen on dev ..." when the test sets were split off the eval
    manifests (`test_split`), or "chosen on the reported set" (for the sets where that holds) when there was no test set."""
    if not metrics:
        return ""
    own = chosen_on_reported(metrics)
    if own and not metrics.get("test_sets"):
        return CHOSEN_ON_REPORTED
    split = {k: v for k, v in (metrics.get("test_split") or {}).items() if isinstance(v, dict)}
    where = f"test (split off {', '.join(split)} at {next(iter(split.values()))['fraction']:g})" if split else "test"
    dev = metrics.get("dev") or {}
    tuned = [f"{name} {dev[key]:.4f}" for name, key in (("domain", "tuned_wer"), ("heldout", "heldout_tuned_wer"))
             if dev.get(key) is not None]
    text = f"{where}; chosen on dev" + (f" (dev tuned: {', '.join(tuned)})" if tuned else "")
    return text + "".join(f"; {name}: {CHOSEN_ON_REPORTED}" for name in own)


def real_speech(metrics: dict) -> str:
    """"0.1234 → 0.1100 (12 clips)" for a run evaluated on real recordings, else ""."""
    base, tuned, sdi = metrics.get("real_baseline_wer"), metrics.get("real_tuned_wer"), metrics.get("real_sdi") or {}
    if base is None or tuned is None:
        return ""
    return f"{base:.4f} → {tuned:.4f} ({sdi.get('n', '?')} clips)"


def matrix_row(run: Run, n_resamples: int = 2000, seed: int = 0, loop_min_repeats: int = LOOP_MIN_REPEATS,
               runaway_ratio: float = RUNAWAY_RATIO) -> dict:
    """The raw matrix row of one run (numbers unformatted; no verdict yet)."""
    g = run.get
    notes = g("notes", "")
    if run.status == "failed" and run.metrics.get("error"):
        notes = f"{notes} Error: {run.metrics['error']}".strip()
    row = {
        "run_id": run.run_id, "date": g("date") or folder_date(run.path),
        "command": g("command") or run.record.get("command"), "dataset": g("dataset"),
        "steps": g("steps") if run.metrics else (run.history[-1]["step"] if run.history else None),
        "lr": g("lr"), "manifest": g("manifest"), "baseline_wer": g("baseline_wer"),
        "tuned_wer": g("tuned_wer"), "notes": notes,
        "heldout_baseline_wer": g("heldout_baseline_wer"), "heldout_tuned_wer": g("heldout_tuned_wer"),
        "best_step": run.best_step(), "best_alpha": g("best_alpha"), "stop_reason": g("stop_reason"),
        "adapter": "none (prompt only)" if g("stop_reason") == "prompt_only" else (
            None if g("use_dora") is None else ("DoRA" if g("use_dora") else "LoRA")),
        "rank": g("lora_r"), "status": run.status, "error": None, "seed": g("seed"),
        "config_key": config_key(run.config, ignore={"seed"}), "reported_on": reported_on(run.metrics),
        "guardrail": g("guardrail"), "chosen_on_reported": bool(chosen_on_reported(run.metrics)),
        "real": real_speech(run.metrics),
    }
    for split, (base_key, tuned_key) in SPLIT_KEYS.items():
        row[f"{split}_delta_pts"] = delta_pts(row[base_key], row[tuned_key])
        row.update(_split_cis(run, split, n_resamples, seed, row))
    row["hallucinations"] = (run_hallucinations(run, loop_min_repeats, runaway_ratio)
                             if run.status == "finished" else {})
    for split, counts in row["hallucinations"].items():
        for model in ("baseline", "tuned"):
            row[f"{split}_hallucinations_{model}"] = counts[model]["flagged"]
            row[f"{split}_truncated_{model}"] = counts[model]["truncated"]
    row["other_language"] = language_id.run_language_flags(run) if run.status == "finished" else {}
    for split, counts in row["other_language"].items():
        for model in ("baseline", "tuned"):
            row[f"{split}_other_language_{model}"] = counts[model]["flagged"]
    return row


SPLIT_CI_KEYS = ("ci_low", "ci_high", "poi", "block_ci_low", "block_ci_high", "block_poi", "n_speakers", "wider_ci")


def _split_cis(run: Run, split: str, n_resamples: int, seed: int, row: dict) -> dict:
    """The utterance bootstrap's CI and probability of improvement for one split, and, when every
    prediction has a speaker_id and there are at least two speakers, the speaker-block bootstrap's,
    with which of the two CIs is wider. A pairing problem goes to row["error"]."""
    out: dict[str, Any] = {f"{split}_{k}": None for k in SPLIT_CI_KEYS}
    if run.status != "finished" or split not in run.splits():
        return out
    base, tuned = run.predictions(split, "baseline"), run.predictions(split, "best")
    try:
        ci = paired_bootstrap(base, tuned, n_resamples=n_resamples, seed=seed)
    except PredictionMismatch as e:
        row["error"] = f"{split} predictions: {e}"
        return out
    out.update({f"{split}_ci_low": ci.low_pts, f"{split}_ci_high": ci.high_pts, f"{split}_poi": ci.prob_improvement})
    speakers = speakers_of(base)
    if speakers is None or len(set(speakers)) < 2:
        return out
    block = block_bootstrap(base, tuned, n_resamples=n_resamples, seed=seed)
    out.update({f"{split}_block_ci_low": block.low_pts, f"{split}_block_ci_high": block.high_pts,
                f"{split}_block_poi": block.prob_improvement, f"{split}_n_speakers": block.n_blocks,
                f"{split}_wider_ci": "block" if block.width_pts > ci.width_pts else "utterance"})
    return out


@dataclass
class RunMatrix:
    """Matrix rows (raw values) plus the criteria their verdicts used; renders as Markdown."""

    rows: list[dict]
    criteria: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)  # the hallucination thresholds

    def markdown(self) -> str:
        if not self.rows:
            return "_No runs in the matrix._"
        table = markdown_table([{k: format_cell(k, r) for k, _ in MATRIX_COLUMNS} for r in self.rows],
                               MATRIX_COLUMNS)
        flags = ""
        if self.flags:
            flags = (f" Hallucinations: hypotheses with an n-gram (1-4 words) repeated ≥ {self.flags['loop_min_repeats']} "
                     f"times in a row, or longer than {self.flags['runaway_ratio']:g} × reference words + 5. "
                     f"Other-language answers: hypotheses of ≥ {language_id.MIN_WORDS} words identified (py3langid) as "
                     "another language than their clip's.")
        return f"{table}\n\n_Verdict criteria: {describe_criteria(**self.criteria)}.{flags}_\n"

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


_MARKDOWN_ONLY = {"domain_delta", "heldout_delta", "verdict", "domain_block", "domain_poi", "heldout_block",
                  "heldout_poi", "heldout_point", "heldout_ni", "hallucinations", "truncated",
                  "other_language"}  # the CSV has their numbers apart
CSV_COLUMNS = [c for c in MATRIX_COLUMNS if c[0] not in _MARKDOWN_ONLY
               ] + [("domain_delta_pts", "Domain Δ pts"), ("domain_ci_low", "Domain CI low"),
                    ("domain_ci_high", "Domain CI high"), ("heldout_delta_pts", "Heldout Δ pts"),
                    ("heldout_ci_low", "Heldout CI low"), ("heldout_ci_high", "Heldout CI high"),
                    ("verdict", "Verdict")] + [
    (f"{split}_{key}", f"{split.capitalize()} {header}") for split in ("domain", "heldout") for key, header in (
        ("block_ci_low", "block CI low"), ("block_ci_high", "block CI high"), ("wider_ci", "wider CI"),
        ("n_speakers", "speakers"), ("poi", "P(improve)"), ("block_poi", "block P(improve)"),
        ("hallucinations_baseline", "hallucinations baseline"), ("hallucinations_tuned", "hallucinations tuned"),
        ("truncated_baseline", "cut at token limit baseline"), ("truncated_tuned", "cut at token limit tuned"),
        ("other_language_baseline", "other-language answers baseline"), ("other_language_tuned", "other-language answers tuned"))
] + [("heldout_point", "Heldout point"), ("heldout_ni", "Heldout NI"), ("guardrail_test", "Guardrail test")]


def describe_criteria(min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float | None = None,
                      require_ci: bool = True, guardrail_test: str = "point") -> str:
    ci = " with the paired-bootstrap 95% CI excluding 0" if require_ci else ""
    margin = "the run's guardrail" if max_heldout_regression_pts is None else f"{max_heldout_regression_pts:g} pt"
    heldout = (f"rises by ≤ {margin} at the upper bound of its 95% CI (the wider of "
               "utterance and speaker-block: non-inferiority)" if guardrail_test == "noninferiority"
               else f"rises by ≤ {margin}")
    return (f"accept when domain WER drops by ≥ {min_domain_gain_pts:g} pt{ci} and heldout WER {heldout}; "
            f"a verdict on numbers from the set that chose the checkpoint is marked \"{PROVISIONAL}\"")


def run_matrix(runs: Iterable[Run], min_domain_gain_pts: float = 1.0,
               max_heldout_regression_pts: float | None = None, require_ci: bool = True,
               n_resamples: int = 2000, seed: int = 0, guardrail_test: str = "point",
               loop_min_repeats: int = LOOP_MIN_REPEATS, runaway_ratio: float = RUNAWAY_RATIO) -> RunMatrix:
    """The matrix over non-archived runs: one row per run whatever its status, with verdicts.

    `guardrail_test` ("point" | "noninferiority") picks the heldout criterion that decides; both are
    in every row ("heldout_point", "heldout_ni": pass/fail). `max_heldout_regression_pts` None (the default):
    each run is judged by its own recorded `guardrail`, the threshold its selection used. `loop_min_repeats` and `runaway_ratio` are
    the hallucination flags' thresholds (see `hallucination.flag_hypothesis`)."""
    criteria = dict(min_domain_gain_pts=min_domain_gain_pts, max_heldout_regression_pts=max_heldout_regression_pts,
                    require_ci=require_ci, guardrail_test=guardrail_test)
    rows = []
    for run in runs:
        if run.archived:
            continue
        row = matrix_row(run, n_resamples=n_resamples, seed=seed, loop_min_repeats=loop_min_repeats,
                         runaway_ratio=runaway_ratio)
        row["verdict"] = verdict(row, **criteria)
        checks = guardrail_checks(row, max_heldout_regression_pts) if row["status"] == "finished" else {}
        row["heldout_point"], row["heldout_ni"] = (_pass(checks.get(k)) for k in ("point", "noninferiority"))
        row["heldout_ni_high"], row["guardrail_test"] = heldout_ci_high(row), guardrail_test
        rows.append(row)
    return RunMatrix(rows, criteria, dict(loop_min_repeats=loop_min_repeats, runaway_ratio=runaway_ratio))


def _pass(ok: bool | None) -> str | None:
    return None if ok is None else ("pass" if ok else "fail")


def write_matrix(runs_dir: PathLike, **criteria: Any) -> list[Path]:
    """Load every run under `runs_dir` and write run_matrix.md/.csv and run_archive.md there
    (what `lorakit matrix` does); `criteria` go to `run_matrix`."""
    loaded = load_runs(runs_dir)
    paths = run_matrix(loaded, **criteria).write(runs_dir)
    archive = write_archive(loaded, runs_dir) if loaded else None
    return paths + ([archive] if archive else [])


def _fmt_delta(row: dict, split: str) -> str:
    return format_pts(*(row.get(f"{split}_{k}") for k in ("delta_pts", "ci_low", "ci_high")))


def _fmt_block(row: dict, split: str) -> str:
    """The speaker-block CI and its speakers, flagged "wider" or "narrower" than the utterance CI beside it."""
    low, high = row.get(f"{split}_block_ci_low"), row.get(f"{split}_block_ci_high")
    if low is None:
        return ""
    wider = "wider" if row.get(f"{split}_wider_ci") == "block" else "narrower"
    return f"[{low:+.2f}, {high:+.2f}] {wider}, {row.get(f'{split}_n_speakers')} spk"


def _fmt_poi(row: dict, split: str) -> str:
    """Probability of improvement, utterance bootstrap then speaker-block ("0.99 / 0.93")."""
    poi, block = row.get(f"{split}_poi"), row.get(f"{split}_block_poi")
    if poi is None:
        return ""
    return f"{poi:.2f}" + ("" if block is None else f" / {block:.2f}")


def format_cell(key: str, row: dict) -> str:
    """A matrix cell as the Markdown table shows it."""
    if key in ("domain_delta", "heldout_delta"):
        return _fmt_delta(row, key.split("_")[0])
    if key in ("domain_block", "heldout_block"):
        return _fmt_block(row, key.split("_")[0])
    if key.endswith("_poi"):
        return _fmt_poi(row, key.split("_")[0])
    if key == "hallucinations":
        return format_counts(row.get("hallucinations") or {})
    if key == "truncated":
        return format_truncated(row.get("hallucinations") or {})
    if key == "other_language":
        return language_id.format_counts(row.get("other_language") or {})
    value = row.get(key)
    if value is None or value == "":
        return ""
    if key.endswith("_wer"):
        return format_wer(value)
    if key == "lr":
        return format_lr(value)
    if key in _CODE_KEYS:
        return f"`{value}`"
    return str(value)


def _csv_cell(key: str, row: dict) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if key.endswith("_poi"):
        return f"{value:.3f}"
    if key.endswith("_pts") or "_ci_" in key:
        return f"{value:.2f}"
    if key.endswith("_wer"):
        return format_wer(value)
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
