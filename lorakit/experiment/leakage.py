"""The train/eval leakage check: eval utterances whose normalized text or audio bytes also occur in
the training set. A leak makes a domain gain look larger than it is; the run record carries the
counts and examples, and the run prints them as a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..display import progress_bar
from ..scoring import normalize_for_leakage
from .audio import audio_sha256
from .manifests import Utterance

MAX_EXAMPLES = 5  # per eval set, enough to see what leaked without flooding the record


@dataclass(frozen=True)
class SetLeakage:
    n: int  # utterances in the eval set
    text: int  # eval utterances whose normalized text occurs in train
    audio: int  # eval utterances whose audio bytes occur in train
    leaked: int  # eval utterances leaking either way
    examples: list[dict[str, str]]  # {"kind", "eval_id", "train_id", "text"}


@dataclass(frozen=True)
class LeakageReport:
    sets: dict[str, SetLeakage]

    @property
    def is_clean(self) -> bool:
        return all(s.leaked == 0 for s in self.sets.values())

    def summary(self) -> str:
        parts = [
            f"{name}: {s.leaked} of {s.n} leak from train ({s.text} by text, {s.audio} by audio)"
            for name, s in self.sets.items()
        ]
        return ("no train/eval leakage; " if self.is_clean else "LEAKAGE: ") + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {name: {"n": s.n, "text": s.text, "audio": s.audio, "leaked": s.leaked,
                       "examples": [dict(e) for e in s.examples]}
                for name, s in self.sets.items()}


def hash_audio(utts: list[Utterance]) -> dict[str, str]:
    """path -> SHA-256 of every clip's bytes, each file read once (a clip listed in several sets too);
    reading a corpus is the slow part of the check, so it has a progress bar."""
    paths = list(dict.fromkeys(u.audio_filepath for u in utts))
    return {p: audio_sha256(p) for p in progress_bar(paths, desc="leakage: hash audio", unit="file", leave=False)}


def check_leakage(train: list[Utterance], others: dict[str, list[Utterance]]) -> LeakageReport:
    """Find eval utterances that share normalized text or identical audio bytes with train."""
    hashes = hash_audio(train + [u for utts in others.values() for u in utts])

    train_text: dict[str, str] = {}
    train_audio: dict[str, str] = {}
    for u in train:
        norm = normalize_for_leakage(u.text)
        if norm:  # punctuation-only text would match every other punctuation-only line
            train_text.setdefault(norm, u.id)
        train_audio.setdefault(hashes[u.audio_filepath], u.id)

    sets = {}
    for name, utts in others.items():
        n_text = n_audio = n_leaked = 0
        examples: list[dict[str, str]] = []
        for u in utts:
            norm = normalize_for_leakage(u.text)
            by_text = train_text.get(norm) if norm else None
            by_audio = train_audio.get(hashes[u.audio_filepath])
            n_text += by_text is not None
            n_audio += by_audio is not None
            if by_text is None and by_audio is None:
                continue
            n_leaked += 1
            if len(examples) < MAX_EXAMPLES:
                kind = "text+audio" if by_text and by_audio else "text" if by_text else "audio"
                examples.append({"kind": kind, "eval_id": u.id,
                                 "train_id": by_audio or by_text, "text": u.text})
        sets[name] = SetLeakage(len(utts), n_text, n_audio, n_leaked, examples)
    return LeakageReport(sets)
