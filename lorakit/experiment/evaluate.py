"""Evaluation: batched greedy transcription with the adapters active, and normalized WER.

Both sides are normalized for the language of the text (`scoring.normalize`: Whisper's English rules
for English, its basic rules otherwise) before scoring. WER is corpus-level (jiwer), with S/D/I
counts, and every utterance's reference, hypothesis and error counts are kept. Each clip is decoded
and normalized in its own language (`Utterance.language`: the run's unless its manifest says otherwise),
which its row keeps as `language` (the language-ID flag of the analysis reads it). A hypothesis whose
generation ran into its new-token limit without an end-of-text token is cut short: its row says so
(`cut_at_tokens`: that limit, else null), and each evaluation that has one prints a warning naming a clip.
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

ROW_VERSION = 2  # of the prediction rows; 2: `cut_at_tokens` (a baseline cached with older rows is computed again)


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

    def cut_warning(self, desc: str, max_new_tokens: int) -> str | None:
        """One line naming a cut hypothesis's clip and the limit it ran into, with the count; None when none was cut."""
        cut = [r for r in self.rows if r.get("cut_at_tokens") is not None]
        if not cut:
            return None
        first = cut[0]
        return (f"{desc}: {len(cut)} of {len(self.rows)} hypotheses cut at the token limit, with no end-of-text token "
                f"(e.g. {first['audio_filepath']}: {first['cut_at_tokens']} new tokens; max_new_tokens {max_new_tokens}); "
                "the words after the cut count as deletions: raise max_new_tokens, or read them as runaways")


@dataclass
class Hypotheses:
    """Decoded texts in the order of the clips, and for each clip whose generation ran into its new-token
    limit without an end-of-text token (a hypothesis cut short), that limit."""

    texts: list[str]
    cut: dict[str, int] = field(default_factory=dict)  # utterance id -> the token limit it ran into


def text_languages(sm: SpeechModel, utts: list[Utterance]) -> list[str]:
    """The language each clip's text is written in: its spoken language, or English when translating."""
    return [sm.text_language if sm.task == "translate" or not u.language else u.language for u in utts]


def score(utts: list[Utterance], hyps: list[str], language: str | Sequence[str] = "en", cut: dict[str, int] | None = None) -> EvalResult:
    """Each pair normalized for `language` (the language of the text: the run's, or English when translating),
    or for each clip's own (a list, as `text_languages` gives it). With `cut` (`Hypotheses.cut`) every row
    says whether its hypothesis was cut at the token limit (`cut_at_tokens`); without, rows leave it out (unknown)."""
    languages = [language] * len(utts) if isinstance(language, str) else list(language)
    rows = []
    for u, hyp, lang in zip(utts, hyps, languages):
        ref_norm, hyp_norm = normalize(u.text, lang), normalize(hyp, lang)
        rows.append({"id": u.id, "audio_filepath": u.audio_filepath, "speaker_id": u.speaker_id, "ref": u.text, "hyp": hyp,
                     "ref_norm": ref_norm, "hyp_norm": hyp_norm, "language": lang, **utterance_errors(ref_norm, hyp_norm),
                     **({} if cut is None else {"cut_at_tokens": cut.get(u.id)})})
    return EvalResult(rows)


def language_groups(utts: list[Utterance]) -> list[tuple[str | None, list[Utterance]]]:
    """The clips by spoken language, in order of first appearance (one group when all share one)."""
    groups: dict[str | None, list[Utterance]] = {}
    for u in utts:
        groups.setdefault(u.language, []).append(u)
    return list(groups.items())


def transcribe(sm: SpeechModel, utts: list[Utterance], inputs: Inputs, batch_size: int, max_new_tokens: int,
               desc: str = "transcribe", autocast: torch.dtype | None = None) -> list[str]:
    """Hypotheses in the order of `utts` (`decode_clips`' texts)."""
    return decode_clips(sm, utts, inputs, batch_size, max_new_tokens, desc, autocast).texts


def decode_clips(sm: SpeechModel, utts: list[Utterance], inputs: Inputs, batch_size: int, max_new_tokens: int,
                 desc: str = "transcribe", autocast: torch.dtype | None = None) -> Hypotheses:
    """Hypotheses in the order of `utts`, and which were cut at the token limit (read from the generated
    ids: no end-of-text token); batches are length-sorted internally, one language per batch
    (each decoded under its own language token on a multilingual Whisper)."""
    was_training = sm.model.training
    sm.model.eval()
    hyps: dict[str, str] = {}
    cut: dict[str, int] = {}
    device_type = inputs.device.type
    try:
        batches = [(lang, b) for lang, group in language_groups(utts) for b in eval_batches(group, batch_size)]
        for language, batch in tqdm(batches, desc=desc, leave=False):
            with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
                if inputs.cache_dir is not None:  # frozen encoder: its outputs come from the disk cache
                    feats, ids = {}, sm.generate({}, max_new_tokens, encoder_hidden=inputs.encoder_hidden(batch), language=language)
                else:
                    feats = inputs.features(batch)
                    ids = sm.generate(feats, max_new_tokens, language=language)
            for u, text, limit in zip(batch, sm.decode(ids), sm.cut_short(ids, feats, max_new_tokens)):
                hyps[u.id] = text
                if limit is not None:
                    cut[u.id] = limit
    finally:
        sm.model.train(was_training)
    return Hypotheses([hyps[u.id] for u in utts], cut)


def evaluate(sm: SpeechModel, utts: list[Utterance], inputs: Inputs, batch_size: int, max_new_tokens: int,
             desc: str = "evaluate", autocast: torch.dtype | None = None) -> EvalResult:
    """Decode and score `utts`; prints a warning line when a hypothesis was cut at the token limit."""
    hyps = decode_clips(sm, utts, inputs, batch_size, max_new_tokens, desc, autocast)
    result = score(utts, hyps.texts, text_languages(sm, utts), hyps.cut)
    warn_cut(result, desc, max_new_tokens)
    return result


def warn_cut(result: EvalResult, desc: str, max_new_tokens: int) -> None:
    """Print `EvalResult.cut_warning` when there is one (the notebook's output and the run's log show it)."""
    warning = result.cut_warning(desc, max_new_tokens)
    if warning:
        print("WARNING:", warning)
