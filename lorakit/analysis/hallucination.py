"""Hallucination flags: hypotheses caught in a repetition loop (an n-gram of 1-4 words repeated many
times in a row) or running far longer than their reference, the failures users report most after
fine-tuning Whisper. Counted per run and eval set, baseline against tuned, with the worst examples.
Pure functions of prediction rows (`hyp_norm`/`ref_norm`, falling back to `hyp`/`ref`). The rules
themselves are `scoring.hallucination_kinds`, which the experiment's pseudo-labelling applies too.
"""

from __future__ import annotations

from typing import Sequence

from ..display import markdown_table
from ..scoring import LOOP_MIN_REPEATS, RUNAWAY_RATIO, hallucination_kinds
from .runs import Run


def _words(row: dict, key: str) -> list[str]:
    text = row.get(f"{key}_norm")
    if text is None:
        text = (row.get(key) or "").lower()
    return text.split()


def flag_hypothesis(row: dict, loop_min_repeats: int = LOOP_MIN_REPEATS,
                    runaway_ratio: float = RUNAWAY_RATIO) -> dict | None:
    """{"id", "kinds" (loop and/or runaway), "loop", "repeats", "hyp_words", "ref_words", "ref", "hyp"}
    for a flagged hypothesis, else None. A loop the reference itself has (as many repeats) is not one."""
    hyp, ref = _words(row, "hyp"), _words(row, "ref")
    kinds, gram, repeats = hallucination_kinds(hyp, ref, loop_min_repeats=loop_min_repeats, runaway_ratio=runaway_ratio)
    if not kinds:
        return None
    return {"id": row.get("id"), "kinds": kinds, "loop": " ".join(gram) if "loop" in kinds else "",
            "repeats": repeats if "loop" in kinds else 0, "hyp_words": len(hyp), "ref_words": len(ref),
            "ref": row.get("ref", " ".join(ref)), "hyp": row.get("hyp", " ".join(hyp))}


def _severity(flag: dict) -> tuple:
    return (flag["hyp_words"] - flag["ref_words"], flag["repeats"])


def hallucinations(rows: Sequence[dict], loop_min_repeats: int = LOOP_MIN_REPEATS,
                   runaway_ratio: float = RUNAWAY_RATIO, top: int = 3) -> dict:
    """Counts over prediction rows: {"n", "flagged", "loops", "runaways", "truncated", "worst" (top flags,
    most excess words first)}; a hypothesis with both a loop and a runaway counts once in "flagged".
    "truncated": hypotheses cut at the token limit (`cut_at_tokens`), None when a row does not say
    (records written before the kit checked)."""
    flags = [f for f in (flag_hypothesis(r, loop_min_repeats, runaway_ratio) for r in rows) if f]
    return {"n": len(rows), "flagged": len(flags),
            "loops": sum("loop" in f["kinds"] for f in flags),
            "runaways": sum("runaway" in f["kinds"] for f in flags),
            "truncated": truncated(rows),
            "worst": sorted(flags, key=_severity, reverse=True)[:top]}


def truncated(rows: Sequence[dict]) -> int | None:
    """How many hypotheses were cut at the token limit (no end-of-text token), None unless every row says."""
    if not all("cut_at_tokens" in r for r in rows):
        return None
    return sum(r["cut_at_tokens"] is not None for r in rows)


def run_hallucinations(run: Run, loop_min_repeats: int = LOOP_MIN_REPEATS,
                       runaway_ratio: float = RUNAWAY_RATIO, top: int = 3) -> dict:
    """{split: {"baseline": counts, "tuned": counts}} over the splits with baseline and best predictions
    (predictions/<split>_baseline.jsonl against <split>_best.jsonl)."""
    out = {}
    for split in run.splits():
        out[split] = {tag: hallucinations(run.predictions(split, file_tag), loop_min_repeats, runaway_ratio, top)
                      for tag, file_tag in (("baseline", "baseline"), ("tuned", "best"))}
    return out


def format_counts(per_split: dict) -> str:
    """"domain 0→3; heldout 1→1" (flagged hypotheses, baseline→tuned), "" without predictions."""
    return "; ".join(f"{split} {c['baseline']['flagged']}→{c['tuned']['flagged']}" for split, c in per_split.items())


def format_truncated(per_split: dict) -> str:
    """"domain 0→2; heldout 0→0" (hypotheses cut at the token limit, baseline→tuned); "?" for a side whose
    predictions do not say (older records), "" without predictions."""
    def n(c: dict) -> str:
        return "?" if c.get("truncated") is None else str(c["truncated"])
    return "; ".join(f"{split} {n(c['baseline'])}→{n(c['tuned'])}" for split, c in per_split.items())


WORST_COLUMNS = [("run_id", "run"), ("split", "set"), ("model", "model"), ("id", "utterance"),
                 ("kinds", "flag"), ("loop", "loop"), ("repeats", "repeats"), ("words", "hyp/ref words"),
                 ("hyp", "hypothesis")]


def worst_markdown(rows: Sequence[dict], max_chars: int = 160) -> str:
    """The worst flagged hypotheses of matrix rows (their `hallucinations`), tuned model first."""
    table = []
    for row in rows:
        for split, counts in (row.get("hallucinations") or {}).items():
            for model in ("tuned", "baseline"):
                for f in counts[model]["worst"]:
                    hyp = f["hyp"] if len(f["hyp"]) <= max_chars else f["hyp"][:max_chars] + "…"
                    table.append({"run_id": row["run_id"], "split": split, "model": model, "id": f["id"],
                                  "kinds": "+".join(f["kinds"]), "loop": f["loop"], "repeats": f["repeats"] or "",
                                  "words": f"{f['hyp_words']}/{f['ref_words']}", "hyp": hyp})
    if not table:
        return "_No hypothesis flagged as a repetition loop or a runaway._"
    return markdown_table(table, WORST_COLUMNS)
