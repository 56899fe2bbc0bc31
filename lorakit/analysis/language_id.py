"""The "answered in another language" flag: hypotheses whose text is identified as a language other than
the clip's (issue 31: a French model fine-tuned with English replay under its <|fr|> token began answering
French speech in English, and no column said so). Counted per run and eval set, baseline against tuned,
beside the hallucination flags, and listed in the error browser.

The identifier is py3langid (an offline n-gram model, 4.6 MB, numpy only), restricted to the clip's
language, English and a few common ones (`CANDIDATES`): restricted so, it names the language of all
2630 references of the kit's English demo corpus, of 700 French demo sentences and of 34 of 35 German
ones (`bench/language_id.py`). Hypotheses of fewer than `MIN_WORDS` words are not judged (cut to their
first 3 words those sentences are identified 95 % of the time, to 4 words 97-99 %). Pure functions of
prediction rows: each row's `language` (the language its text is written in, which `evaluate.score`
records) or, in records from before it, the run's.
"""

from __future__ import annotations

import functools
from typing import Sequence

from ..display import html_table, markdown_table
from .runs import Run

CANDIDATES = ("de", "en", "es", "fr", "it", "nl", "pt")  # identified among these and the clip's own language
MIN_WORDS = 4  # hypotheses with fewer words are not judged: too short to identify reliably


@functools.cache
def _identifier():
    """py3langid's model, loaded once on first use (about a second: one load, restricted per call)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # here, so the analysis notebook starts without it

    return LanguageIdentifier.from_model_file(MODEL_FILE)


@functools.cache
def known_languages() -> frozenset[str]:
    """The languages the identifier knows (ISO 639-1 codes, as Whisper writes most of them)."""
    return frozenset(_identifier()._full_model[2])


def classify(text: str, languages: Sequence[str]) -> str:
    """The language of `text` among `languages` (each known to the identifier)."""
    identifier, wanted = _identifier(), sorted(set(languages))
    if identifier.nb_classes != [c for c in identifier._full_model[2] if c in wanted]:  # restrict only when the set changes
        identifier.set_languages(wanted)
    return identifier.classify(text)[0]


def identify(text: str, expected: str) -> str | None:
    """The language of `text` among `expected` (the clip's), English and `CANDIDATES`; None (not judged) when
    the text has fewer than MIN_WORDS words or `expected` is a language the identifier does not know."""
    if len(text.split()) < MIN_WORDS or expected not in known_languages():
        return None
    return classify(text, {expected, "en", *CANDIDATES})


def run_text_language(run: Run) -> str:
    """The language a run's hypotheses should be written in when its rows do not say: English when it
    translates, else its `language` (English for records from before that parameter)."""
    return "en" if run.config.get("task") == "translate" else run.config.get("language") or "en"


def flag_row(row: dict, default_language: str) -> dict | None:
    """{"id", "expected", "identified", "hyp", "ref"} when the hypothesis reads as another language than
    the clip's (`row["language"]`, else `default_language`); None otherwise or when not judged."""
    expected = row.get("language") or default_language
    found = identify(row.get("hyp") or "", expected)
    if found is None or found == expected:
        return None
    return {"id": row["id"], "expected": expected, "identified": found, "hyp": row.get("hyp", ""), "ref": row.get("ref", "")}


def other_language(rows: Sequence[dict], default_language: str, top: int = 3) -> dict:
    """Counts over prediction rows: {"n", "judged" (long enough to identify), "flagged", "by_language"
    ({identified: count}), "examples" (the first `top` flags, in row order)}."""
    flags = [f for f in (flag_row(r, default_language) for r in rows) if f]
    by_language: dict[str, int] = {}
    for f in flags:
        by_language[f["identified"]] = by_language.get(f["identified"], 0) + 1
    judged = sum(len((r.get("hyp") or "").split()) >= MIN_WORDS for r in rows)
    return {"n": len(rows), "judged": judged, "flagged": len(flags), "by_language": by_language, "examples": flags[:top]}


def run_language_flags(run: Run, top: int = 3) -> dict:
    """{split: {"baseline": counts, "tuned": counts}} over the splits with baseline and best predictions."""
    default = run_text_language(run)
    return {split: {tag: other_language(run.predictions(split, file_tag), default, top)
                    for tag, file_tag in (("baseline", "baseline"), ("tuned", "best"))} for split in run.splits()}


def format_counts(per_split: dict) -> str:
    """"domain 0→0; heldout 0→59" (hypotheses in another language, baseline→tuned), "" without predictions."""
    return "; ".join(f"{split} {c['baseline']['flagged']}→{c['tuned']['flagged']}" for split, c in per_split.items())


FLAG_COLUMNS = [("run_id", "run"), ("split", "set"), ("model", "model"), ("id", "utterance"),
                ("expected", "clip's language"), ("identified", "identified"), ("hyp", "hypothesis")]


def flagged_markdown(rows: Sequence[dict], max_chars: int = 160) -> str:
    """The example flags of matrix rows (their `other_language`), tuned model first."""
    table = [{"run_id": row["run_id"], "split": split, "model": model, **f,
              "hyp": f["hyp"] if len(f["hyp"]) <= max_chars else f["hyp"][:max_chars] + "…"}
             for row in rows for split, counts in (row.get("other_language") or {}).items()
             for model in ("tuned", "baseline") for f in counts[model]["examples"]]
    if not table:
        return "_No hypothesis identified as another language than its clip's._"
    return markdown_table(table, FLAG_COLUMNS)


def flagged_html(run_id: str, split: str, baseline: Sequence[dict], tuned: Sequence[dict], default_language: str,
                 max_rows: int = 10) -> str:
    """The error browser's listing: the tuned hypotheses in another language than their clip's (with the
    baseline's count beside), "" when neither model has one."""
    base, best = other_language(baseline, default_language, 0), other_language(tuned, default_language, max_rows)
    if not base["flagged"] and not best["flagged"]:
        return ""
    title = (f"{run_id} · {split}: {best['flagged']} tuned hypotheses answered in another language than the clip's "
             f"(baseline {base['flagged']}; of {best['judged']} of ≥ {MIN_WORDS} words)")
    return html_table(best["examples"], [("id", "id"), ("expected", "clip's language"), ("identified", "identified"),
                                         ("ref", "reference"), ("hyp", "tuned hypothesis")], title)
