"""Hallucination flags: hypotheses caught in a repetition loop (an n-gram of 1-4 words repeated many
times in a row) or running far longer than their reference, the failures users report most after
fine-tuning Whisper. Counted per run and eval set, baseline against tuned, with the worst examples.
Pure functions of prediction rows (`hyp_norm`/`ref_norm`, falling back to `hyp`/`ref`).
"""

from __future__ import annotations

from typing import Sequence

from ..display import markdown_table
from .runs import Run

LOOP_MIN_REPEATS = 4  # an n-gram repeated this many times in a row is a loop
RUNAWAY_RATIO = 2.0  # a hypothesis longer than this times its reference's words (+ RUNAWAY_SLACK) runs away
RUNAWAY_SLACK = 5  # words allowed beyond the ratio, so short references do not flag on a word or two
MAX_NGRAM = 4


def _words(row: dict, key: str) -> list[str]:
    text = row.get(f"{key}_norm")
    if text is None:
        text = (row.get(key) or "").lower()
    return text.split()


def _repeats_at(words: Sequence[str], start: int, n: int) -> int:
    """How many times words[start:start+n] occurs back to back from `start`."""
    gram, count, i = list(words[start:start + n]), 1, start + n
    while words[i:i + n] == gram:
        count, i = count + 1, i + n
    return count


def longest_loop(words: Sequence[str], max_n: int = MAX_NGRAM) -> tuple[tuple[str, ...], int]:
    """The n-gram (1..max_n words) with the most consecutive repeats in `words`, and that count
    (((), 0) for no words). Ties go to the shorter n-gram, then the earlier one."""
    words = list(words)
    best: tuple[tuple[str, ...], int] = ((), 0)
    for n in range(1, max_n + 1):
        for start in range(len(words) - n + 1):
            count = _repeats_at(words, start, n)
            if count > best[1]:
                best = (tuple(words[start:start + n]), count)
    return best


def _max_repeats_of(words: Sequence[str], gram: tuple[str, ...]) -> int:
    n = len(gram)
    return max((_repeats_at(words, i, n) for i in range(len(words) - n + 1)
                if tuple(words[i:i + n]) == gram), default=0)


def flag_hypothesis(row: dict, loop_min_repeats: int = LOOP_MIN_REPEATS,
                    runaway_ratio: float = RUNAWAY_RATIO) -> dict | None:
    """{"id", "kinds" (loop and/or runaway), "loop", "repeats", "hyp_words", "ref_words", "ref", "hyp"}
    for a flagged hypothesis, else None. A loop the reference itself has (as many repeats) is not one."""
    hyp, ref = _words(row, "hyp"), _words(row, "ref")
    gram, repeats = longest_loop(hyp)
    kinds = []
    if repeats >= loop_min_repeats and repeats > _max_repeats_of(ref, gram):
        kinds.append("loop")
    if len(hyp) > runaway_ratio * len(ref) + RUNAWAY_SLACK:
        kinds.append("runaway")
    if not kinds:
        return None
    return {"id": row.get("id"), "kinds": kinds, "loop": " ".join(gram) if "loop" in kinds else "",
            "repeats": repeats if "loop" in kinds else 0, "hyp_words": len(hyp), "ref_words": len(ref),
            "ref": row.get("ref", " ".join(ref)), "hyp": row.get("hyp", " ".join(hyp))}


def _severity(flag: dict) -> tuple:
    return (flag["hyp_words"] - flag["ref_words"], flag["repeats"])


def hallucinations(rows: Sequence[dict], loop_min_repeats: int = LOOP_MIN_REPEATS,
                   runaway_ratio: float = RUNAWAY_RATIO, top: int = 3) -> dict:
    """Counts over prediction rows: {"n", "flagged", "loops", "runaways", "worst" (top flags, most
    excess words first)}; a hypothesis with both a loop and a runaway counts once in "flagged"."""
    flags = [f for f in (flag_hypothesis(r, loop_min_repeats, runaway_ratio) for r in rows) if f]
    return {"n": len(rows), "flagged": len(flags),
            "loops": sum("loop" in f["kinds"] for f in flags),
            "runaways": sum("runaway" in f["kinds"] for f in flags),
            "worst": sorted(flags, key=_severity, reverse=True)[:top]}


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
