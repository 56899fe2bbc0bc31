"""The training-data checks of each run, read from its record: likely label errors (the base model's
transcript against the label, `label_check`) and the pseudo-labelled replay set's left-out clips.
Pure functions of `metrics.json`'s data section (`experiment/pseudo_labels.py` writes it)."""

from __future__ import annotations

from collections.abc import Sequence

from ..display import markdown_table
from .runs import Run

COLUMNS = [("run_id", "run"), ("where", "manifest:line"), ("wer", "base WER"), ("cps", "chars/s"),
           ("reasons", "why"), ("text", "label"), ("base_hyp", "base model heard")]
SUMMARY_COLUMNS = [("run_id", "run"), ("labels", "label check"), ("replay", "pseudo-labelled replay")]
NO_CHECKS = "_No run checked its labels (`-p label_check report`) or replayed pseudo-labelled audio._"


def recorded_check(run: Run, part: str, key: str) -> dict:
    """A check the run recorded in its data section (`data.<part>.<key>`: train.label_check,
    replay.pseudo_labels); {} when it made none (or predates it)."""
    return ((run.get("data") or {}).get(part) or {}).get(key) or {}


def label_check_summary(run: Run) -> str:
    """"12 of 600 flagged, 12 dropped" (label_check), "" when the run did not check its labels."""
    check = recorded_check(run, "train", "label_check")
    if not check:
        return ""
    return f"{check['flagged']} of {check['checked']} flagged, {check['dropped']} dropped ({check['mode']})"


def pseudo_label_summary(run: Run) -> str:
    """"281 of 300 kept; left out: unsure 15, loop 4" for a run replaying unlabeled audio, else ""."""
    report = recorded_check(run, "replay", "pseudo_labels")
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
        for f in recorded_check(run, "train", "label_check").get("likely_label_errors", []):
            table.append({"run_id": run.get("run_id"), "where": f"{f['manifest'].rsplit('/', 1)[-1]}:{f['line']}",
                          "wer": f"{f['wer']:.2f}", "cps": f"{f['chars_per_second']:.1f}", "reasons": "; ".join(f["reasons"]),
                          "text": cut(f["text"]), "base_hyp": cut(f["base_hyp"])})
    if not table:
        return "_No likely label errors (or no run checked its labels: `-p label_check report`)._"
    return markdown_table(table, COLUMNS)


def data_checks_markdown(runs: Sequence[Run]) -> str:
    """The training-data checks of `runs` (the analysis notebook's section): one row per run that checked
    its labels or replayed pseudo-labelled audio, with both summaries, then every likely label error;
    one line when no run did either."""
    rows = [{"run_id": run.get("run_id"), "labels": label_check_summary(run) or "not checked",
             "replay": pseudo_label_summary(run) or "none"} for run in runs]
    rows = [r for r in rows if (r["labels"], r["replay"]) != ("not checked", "none")]
    if not rows:
        return NO_CHECKS
    return markdown_table(rows, SUMMARY_COLUMNS) + "\n\n**Likely label errors**\n\n" + label_errors_markdown(runs)
