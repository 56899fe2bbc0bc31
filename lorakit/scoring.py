"""Scoring: every text normalizer the kit uses, each named for its job, and the per-utterance error
counts WER is summed from. Imports nothing from lorakit and no torch, so the experiment (which scores)
and the analysis (which recounts and matches terms) share one definition.

- `normalize(text, language)`: what WER is computed on. English: Whisper's English normalizer with the
  British->American spelling table `whisper-normalizer` ships (transformers' class leaves it empty
  unless given one). Any other language: Whisper's basic normalizer (case, punctuation, bracketed
  text, symbols; diacritics kept, so French and German words keep their letters). The English rules
  (spellings, number words, contractions) are English-only: applied to French they would rewrite it
  (strip its accents, so "déjà" == "deja"; "colour" -> "color"; German "hab's" -> "hab is").
  What the basic rules do with other languages' words, on both sides alike: an apostrophe (' or ’)
  or a hyphen splits, so the French elision "l'homme" counts as two words ("l homme": a dropped
  elision is one deletion) and "vingt-cinq" as two; a German compound stays one word, so one written
  apart is a substitution and an insertion; words in brackets or parentheses are dropped (Whisper's
  rule for annotations such as "(laughs)"); numbers are never spelled or unspelled ("25" != "vingt-cinq").
- `normalize_for_leakage`: what two sets are compared on to find the same sentence in both.
- `normalize_term`: what a domain term is matched on inside normalized references.
- `hallucination_kinds`: the repetition-loop and runaway rules, shared by the analysis (flags on
  predictions, against their reference) and the experiment (pseudo-labels, against their audio's length).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Sequence

ENGLISH_NORMALIZER = "whisper-english+spelling-1"  # recorded in runs and baseline keys: a change re-scores
BASIC_NORMALIZER = "whisper-basic-1"


def normalizer_name(language: str) -> str:
    """The normalizer WER uses for text in `language` (a Whisper code), as runs record it."""
    return ENGLISH_NORMALIZER if language == "en" else BASIC_NORMALIZER


@lru_cache(maxsize=1)
def _english():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
    from whisper_normalizer.english import EnglishSpellingNormalizer

    return EnglishTextNormalizer(EnglishSpellingNormalizer().mapping)


@lru_cache(maxsize=1)
def _basic():
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize(text: str, language: str = "en") -> str:
    """The text WER is computed on: English rules for English (case, punctuation, numbers, colour ->
    color), Whisper's basic rules for every other language."""
    rules = _english() if language == "en" else _basic()
    return " ".join(rules(text).split())


def normalize_for_leakage(text: str) -> str:
    """Lowercase, drop apostrophes, turn other punctuation into spaces, collapse whitespace:
    "Don't  stop!" and "dont stop" count as the same sentence."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"['’`]", "", text)
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(text.split())


def normalize_term(text: str) -> str:
    """Lowercase and strip punctuation, so "Amoxicillin-Clavulanate" matches the normalized refs."""
    return " ".join(re.sub(r"[^\w']+", " ", text.lower()).split())


def utterance_errors(ref_norm: str, hyp_norm: str) -> dict:
    """S/D/I of one normalized pair, as prediction rows store them (an empty reference makes every
    hypothesis word an insertion)."""
    import jiwer  # ~0.1 s; only the experiment's scoring and the analysis's breakdown need it

    ref_words = len(ref_norm.split())
    if ref_words == 0:
        counts = {"ref_words": 0, "sub": 0, "del": 0, "ins": len(hyp_norm.split())}
    else:
        out = jiwer.process_words(ref_norm, hyp_norm)
        counts = {"ref_words": ref_words, "sub": out.substitutions, "del": out.deletions, "ins": out.insertions}
    return {**counts, "errors": counts["sub"] + counts["del"] + counts["ins"]}


# --- hallucination rules: the analysis flags predictions with them, the experiment filters pseudo-labels
LOOP_MIN_REPEATS = 4  # an n-gram repeated this many times in a row is a loop
MAX_NGRAM = 4  # loops of 1-4 words
RUNAWAY_RATIO = 2.0  # a hypothesis longer than this times its reference's words (+ RUNAWAY_SLACK) runs away
RUNAWAY_SLACK = 5  # words allowed beyond the ratio, so short references do not flag on a word or two
MAX_WORDS_PER_SECOND = 5.0  # words/s of audio: read speech runs at 2-4; a transcript beyond (+ slack) is not all in the audio


def repeats_at(words: Sequence[str], start: int, n: int) -> int:
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
            count = repeats_at(words, start, n)
            if count > best[1]:
                best = (tuple(words[start:start + n]), count)
    return best


def max_repeats_of(words: Sequence[str], gram: tuple[str, ...]) -> int:
    """The most consecutive repeats of `gram` anywhere in `words` (0 when it does not occur)."""
    n = len(gram)
    return max((repeats_at(words, i, n) for i in range(len(words) - n + 1) if tuple(words[i:i + n]) == gram), default=0)


def hallucination_kinds(hyp: Sequence[str], ref: Sequence[str] | None = None, seconds: float | None = None,
                        loop_min_repeats: int = LOOP_MIN_REPEATS, runaway_ratio: float = RUNAWAY_RATIO
                        ) -> tuple[list[str], tuple[str, ...], int]:
    """(kinds, loop n-gram, its repeats) for the words of a hypothesis: "loop" when an n-gram repeats
    `loop_min_repeats` times in a row (and more often than in `ref`, when given); "runaway" when it has more
    words than `runaway_ratio` x the reference's (+ RUNAWAY_SLACK), or, with no reference, than
    MAX_WORDS_PER_SECOND x `seconds` of audio (+ RUNAWAY_SLACK)."""
    gram, repeats = longest_loop(hyp)
    kinds = []
    if repeats >= loop_min_repeats and (ref is None or repeats > max_repeats_of(ref, gram)):
        kinds.append("loop")
    limit = runaway_ratio * len(ref) if ref is not None else MAX_WORDS_PER_SECOND * seconds if seconds is not None else None
    if limit is not None and len(hyp) > limit + RUNAWAY_SLACK:
        kinds.append("runaway")
    return kinds, gram, repeats
