"""Evaluation: batched greedy transcription with the adapters active, normalized WER, baseline cache.

Both sides are normalized with Whisper's English normalizer before scoring -- including its
British->American spelling table, which transformers' class leaves empty unless given one; we pass
the table shipped by `whisper-normalizer`. WER is corpus-level (jiwer), with S/D/I counts, and every
utterance's reference, hypothesis and error counts are kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jiwer
import torch
from tqdm.auto import tqdm

from .data import Inputs, eval_batches, preprocessing_fingerprint, tensor_fingerprint
from .manifests import Utterance
from .models import SpeechModel

NORMALIZER_VERSION = "whisper-english+spelling-1"


@lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
    from whisper_normalizer.english import EnglishSpellingNormalizer

    return EnglishTextNormalizer(EnglishSpellingNormalizer().mapping)


def normalize(text: str) -> str:
    """Whisper's English normalization: case, punctuation, numbers, spelling (colour -> color)."""
    return " ".join(_normalizer()(text).split())


def utterance_errors(ref_norm: str, hyp_norm: str) -> dict:
    """S/D/I counts for one normalized pair (an empty reference makes every hyp word an insertion)."""
    ref_words = len(ref_norm.split())
    if ref_words == 0:
        return {"ref_words": 0, "sub": 0, "del": 0, "ins": len(hyp_norm.split())}
    out = jiwer.process_words(ref_norm, hyp_norm)
    return {"ref_words": ref_words, "sub": out.substitutions, "del": out.deletions, "ins": out.insertions}


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


def score(utts: list[Utterance], hyps: list[str]) -> EvalResult:
    rows = []
    for u, hyp in zip(utts, hyps):
        ref_norm, hyp_norm = normalize(u.text), normalize(hyp)
        counts = utterance_errors(ref_norm, hyp_norm)
        rows.append(
            {"id": u.id, "audio_filepath": u.audio_filepath, "speaker_id": u.speaker_id, "ref": u.text, "hyp": hyp,
             "ref_norm": ref_norm, "hyp_norm": hyp_norm, **counts, "errors": counts["sub"] + counts["del"] + counts["ins"]}
        )
    return EvalResult(rows)


def transcribe(sm: SpeechModel, utts: list[Utterance], inputs: Inputs, batch_size: int, max_new_tokens: int,
               desc: str = "transcribe", autocast: torch.dtype | None = None) -> list[str]:
    """Hypotheses in the order of `utts`; batches are length-sorted internally."""
    was_training = sm.model.training
    sm.model.eval()
    hyps: dict[str, str] = {}
    device_type = inputs.device.type
    try:
        for batch in tqdm(eval_batches(utts, batch_size), desc=desc, leave=False):
            with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
                if inputs.cache_dir is not None:  # frozen encoder: its outputs come from the disk cache
                    ids = sm.generate({}, max_new_tokens, encoder_hidden=inputs.encoder_hidden(batch))
                else:
                    ids = sm.generate(inputs.features(batch), max_new_tokens)
            for u, text in zip(batch, sm.decode(ids)):
                hyps[u.id] = text
    finally:
        sm.model.train(was_training)
    return [hyps[u.id] for u in utts]


def evaluate(sm: SpeechModel, utts: list[Utterance], inputs: Inputs, batch_size: int, max_new_tokens: int,
             desc: str = "evaluate", autocast: torch.dtype | None = None) -> EvalResult:
    return score(utts, transcribe(sm, utts, inputs, batch_size, max_new_tokens, desc, autocast))


# --- the shared baseline ----------------------------------------------------------------------
def baseline_key(sm: SpeechModel, manifest_sha: str, utt_ids: list[str], rms_target: float, max_new_tokens: int,
                 model_fingerprint: str | None = None) -> str:
    """What the baseline depends on: the model's weights, the manifest's bytes (and which lines are
    used), the preprocessing, the generation settings and the normalizer. Nothing else.

    `model_fingerprint` is `tensor_fingerprint(sm.base)` when the caller already has it: hashing every
    weight costs 0.4 s for whisper-tiny and grows with the model, so a run hashes once for all its sets.
    """
    parts = {
        "model": model_fingerprint or tensor_fingerprint(sm.base),
        "manifest": manifest_sha,
        "utterances": hashlib.sha256("\n".join(utt_ids).encode()).hexdigest(),
        "preprocessing": preprocessing_fingerprint(sm, rms_target),
        "generation": {**sm.base.generation_config.to_diff_dict(), "max_new_tokens": max_new_tokens},
        "normalizer": NORMALIZER_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_baseline(cache_root: Path, key: str) -> EvalResult | None:
    path = cache_root / "baselines" / f"{key}.jsonl"
    if not path.exists():
        return None
    return EvalResult([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def store_baseline(cache_root: Path, key: str, result: EvalResult) -> None:
    from .records import write_jsonl

    write_jsonl(cache_root / "baselines" / f"{key}.jsonl", result.rows)
