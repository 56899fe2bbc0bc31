"""The training-data checks of each run, read from its record: likely label errors (the base model's
transcript against the label, `label_check`) and the pseudo-labelled replay set's left-out clips.
Pure functions of `metrics.json`'s data section (`experiment/pseudo_labels.py` writes it)."""

from __future__ import annotations

from typing import Sequence

from ..display import markdown_table
from .runs import Run

COLUMNS = [("run_id", "run"), ("where", "manifest:line"), ("wer", "base WER"), ("cps", "chars/s"),
           ("reasons", "why"), ("text", "label"), ("base_hyp", "base model heard")]


def label_check_summary(run: Run) -> str:
    """"12 of 600 flagged, 12 dropped" (label_check), "" when the run did not check its labels."""
    check = ((run.get("data") or {}).get("train") or {}).get("label_check")
    if not check:
        return ""
    return f"{check['flagged']} of {check['checked']} flagged, {check['dropped']} dropped ({check['mode']})"


def pseudo_label_summary(run: Run) -> str:
    """"281 of 300 kept; left out: unsure 15, loop 4" for a run replaying unlabeled audio, else ""."""
    report = ((run.get("data") or {}).get("replay") or {}).get("pseudo_labels")
    if not report:
        return ""
    reasons = ", ".join(f"{k} {v}" for k, v in report["left_out_by_reason"].items() if v)
    return f"{report['kept']} of {report['clips']} kept" + (f"; left out: {reasons}" if reasons else "")


def label_errors_markdown(runs: Sequence[Run], max_chars: int = 90) -> str:
    """Every listed likely label error of `runs` (worst base-model WER first), one row each."""
    def cut(text: str) -> str:
        return text if len(text) <= max_chars else text[:max_chars] + "…"

    table = []
    for run in runs:
        check = ((run.get("data") or {}).get("train") or {}).get("label_check") or {}
        for f in check.get("likely_label_errors", []):
            table.append({"run_id": run.get("run_id"), "where": f"{f['manifest'].rsplit('/', 1)[-1]}:{f['line']}",
                          "wer": f"{f['wer']:.2f}", "cps": f"{f['chars_per_second']:.1f}", "reasons": "; ".join(f["reasons"]),
                          "text": cut(f["text"]), "base_hyp": cut(f["base_hyp"])})
    if not table:
        return "_No likely label errors (or no run checked its labels: `-p label_check report`)._"
    return markdown_table(table, COLUMNS)
