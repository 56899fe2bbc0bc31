"""Evaluation: batched greedy transcription with the adapters active, and normalized WER.

Both sides are normalized for the language of the text (`scoring.normalize`: Whisper's English rules
for English, its basic rules otherwise) before scoring. WER is corpus-level (jiwer), with S/D/I
counts, and every utterance's reference, hypothesis and error counts are kept. Each clip is decoded
and normalized in its own language (`Utterance.language`: the run's unless its manifest says otherwise),
which its row keeps as `language` (the language-ID flag of the analysis reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..display import progress_bar as tqdm
from ..scoring import normalize, utterance_errors
from .batches import eval_batches
from .features import Inputs
from .manifests import Utterance
from .models import SpeechModel

@dataclass
class EvalResult:
    """Corpus-level WER of one manifest plus every utterance's row."""

    rows: list[dict] = field(default_factory=list)

    @property
    def ref_words(self) -> int:
        return sum(r["ref_words"] for r in self.rows)

    def count(self, key: str) -> int:
        return sum(r[key] for r in self.rows)

    @property
    def wer(self) -> float:
        return (self.count("sub") + self.count("del") + self.count("ins")) / max(1, self.ref_words)

    def summary(self) -> dict:
        return {"wer": self.wer, "sub": self.count("sub"), "del": self.count("del"), "ins": self.count("ins"), "ref_words": self.ref_words, "n": len(self.rows)}


def text_languages(sm: SpeechModel, utts: list[Utterance]) -> list[str]:
    """The language each clip's text is written in: its spoken language, or English when translating."""
    return [sm.text_language if sm.task == "translate" or not u.language else u.language for u in utts]


def score(utts: list[Utterance], hyps: list[str], language: str | Sequence[str] = "en") -> EvalResult:
    """Each pair normalized for `language` (the language of the text: the run's, or English when translating),
    or for each clip's own (a list, as `text_languages` gives it)."""
    languages = [language] * len(utts) if isinstance(language, str) else list(language)
    rows = []
    for u, hyp, lang in zip(utts, hyps, languages):
        ref_norm, hyp_norm = normalize(u.text, lang), normalize(hyp, lang)
        rows.append({"id": u.id, "audio_filepath": u.audio_filepath, "speaker_id": u.speaker_id, "ref": u.text, "hyp": hyp,
                     "ref_norm": ref_norm, "hyp_norm": hyp_norm, "language": lang, **utterance_errors(ref_norm, hyp_norm)})
    return EvalResult(rows)


def language_groups(utts: list[Utterance]) -> list[tuple[str | None, list[Utterance]]]:
    """The clips by spoken language, in order of first appearance (one group when all share one)."""
    groups: dict[str | None, list[Utterance]] = {}
    for u in utts:
        groups.setdefault(u.language, []).append(u)
    return list(groups.items())


def transcribe(sm: SpeechModel, utts: list[Utterance], inputs: Inputs, batch_size: int, max_new_tokens: int,
               desc: str = "transcribe", autocast: torch.dtype | None = None) -> list[str]:
    """Hypotheses in the order of `utts`; batches are length-sorted internally, one language per batch
    (each decoded under its own language token on a multilingual Whisper)."""
    was_training = sm.model.training
    sm.model.eval()
    hyps: dict[str, str] = {}
    device_type = inputs.device.type
    try:
        batches = [(lang, b) for lang, group in language_groups(utts) for b in eval_batches(group, batch_size)]
        for language, batch in tqdm(batches, desc=desc, leave=False):
            with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
                if inputs.cache_dir is not None:  # frozen encoder: its outputs come from the disk cache
                    ids = sm.generate({}, max_new_tokens, encoder_hidden=inputs.encoder_hidden(batch), language=language)
                else:
                    ids = sm.generate(inputs.features(batch), max_new_tokens, language=language)
            for u, text in zip(batch, sm.decode(ids)):
                hyps[u.id] = text
    finally:
        sm.model.train(was_training)
    return [hyps[u.id] for u in utts]


def evaluate(sm: SpeechModel, utts: list[Utterance], inputs: Inputs, batch_size: int, max_new_tokens: int,
             desc: str = "evaluate", autocast: torch.dtype | None = None) -> EvalResult:
    return score(utts, transcribe(sm, utts, inputs, batch_size, max_new_tokens, desc, autocast), text_languages(sm, utts))
