"""From utterances to model inputs: batches for training, sorted batches for evaluation, and the
encoder-output cache that makes decoder-only adapters cheap.

Every clip goes through `audio.load_audio` (load -> mono -> resample -> RMS normalize): the same
function for training, evaluation and inference. When no adapter touches the Whisper encoder, its
output for a clip never changes, so it is computed once and kept on disk, keyed by the encoder's
weights, the preprocessing, and the clip's bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .audio import audio_sha256, load_audio
from .manifests import Utterance
from .models import SpeechModel

PREPROCESSING_VERSION = 1  # bump when load_audio's behaviour changes, to invalidate caches


def tensor_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's weights (exact bytes): identifies 'this encoder' across runs and processes."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def preprocessing_fingerprint(sm: SpeechModel, rms_target: float) -> dict:
    """Everything between the audio file and the model input, as a JSON-able dict."""
    fe = sm.processor.feature_extractor.to_dict()
    fe.pop("processor_class", None)
    return {"version": PREPROCESSING_VERSION, "rms_target": rms_target, "sampling_rate": sm.sampling_rate, "feature_extractor": fe}


class Inputs:
    """Turns utterances into model inputs, caching what can be cached."""

    def __init__(self, sm: SpeechModel, rms_target: float, cache_dir: Path | None, device: torch.device) -> None:
        self.sm = sm
        self.rms_target = rms_target
        self.device = device
        self.cache_dir = cache_dir  # None: no encoder cache (encoder trains, or not Whisper)
        self._sha: dict[str, str] = {}
        self.encoder_hits = 0
        self.encoder_misses = 0
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def cache_dir_for(root: Path, sm: SpeechModel, rms_target: float) -> Path:
        key = json.dumps({"encoder": tensor_fingerprint(sm.base.get_encoder()), "pre": preprocessing_fingerprint(sm, rms_target)}, sort_keys=True)
        return root / "encoder" / hashlib.sha256(key.encode()).hexdigest()[:16]

    def audio(self, utt: Utterance) -> np.ndarray:
        return load_audio(utt.audio_filepath, sampling_rate=self.sm.sampling_rate, rms_target=self.rms_target)

    def features(self, utts: list[Utterance]) -> dict[str, torch.Tensor]:
        feats = self.sm.features([self.audio(u) for u in utts])
        return {k: v.to(self.device) for k, v in feats.items()}

    def _sha_of(self, utt: Utterance) -> str:
        if utt.audio_filepath not in self._sha:
            self._sha[utt.audio_filepath] = audio_sha256(utt.audio_filepath)
        return self._sha[utt.audio_filepath]

    @torch.no_grad()
    def encoder_hidden(self, utts: list[Utterance]) -> torch.Tensor:
        """Encoder outputs for a batch, from the disk cache where present (computed and stored otherwise)."""
        assert self.cache_dir is not None
        paths = [self.cache_dir / f"{self._sha_of(u)}.npy" for u in utts]
        missing = [i for i, p in enumerate(paths) if not p.exists()]
        if missing:
            self.encoder_misses += len(missing)
            feats = self.features([utts[i] for i in missing])
            hidden = self.sm.encode(feats).float().cpu().numpy()
            for i, h in zip(missing, hidden):
                tmp = paths[i].with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, h)
                os.replace(tmp, paths[i])  # atomic: a killed run never leaves half a cache entry
        self.encoder_hits += len(utts) - len(missing)
        return torch.from_numpy(np.stack([np.load(p) for p in paths])).to(self.device)

    def labels(self, utts: list[Utterance]) -> torch.Tensor:
        """Label ids padded with -100 (ignored by the loss)."""
        ids = [self.sm.label_ids(u.text) for u in utts]
        width = max(len(x) for x in ids)
        out = torch.full((len(ids), width), -100, dtype=torch.long)
        for row, x in enumerate(ids):
            out[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        return out.to(self.device)

    def model_inputs(self, utts: list[Utterance]) -> dict:
        """What the forward pass needs: encoder outputs when cached, else raw features."""
        if self.cache_dir is not None:
            return {"encoder_outputs": (self.encoder_hidden(utts),)}
        return self.features(utts)


def train_batches(utts: list[Utterance], batch_size: int, seed: int, start: int = 0) -> Iterator[list[Utterance]]:
    """Endless micro-batches: a fresh seeded shuffle each epoch; within an epoch, batches of similar
    length (shuffled in chunks of 50 batches) so padding stays small.

    The i-th batch is a pure function of (utts, batch_size, seed, i), so a resumed run sees exactly
    the batches the uninterrupted run would have seen: pass `start` = micro-batches already consumed.
    """
    per_epoch = max(1, len(utts) // batch_size)  # drop the ragged tail: every batch is full
    epoch, offset = divmod(start, per_epoch)
    while True:
        batches = _epoch_batches(utts, batch_size, seed, epoch)
        for batch in batches[offset:]:
            yield batch
        epoch, offset = epoch + 1, 0


def _epoch_batches(utts: list[Utterance], batch_size: int, seed: int, epoch: int) -> list[list[Utterance]]:
    rng = random.Random(f"{seed}:{epoch}")
    order = list(utts)
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for i in range(0, len(order) - batch_size + 1, chunk):
        block = sorted(order[i : i + chunk], key=lambda u: u.duration)
        batches += [block[j : j + batch_size] for j in range(0, len(block) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


def eval_batches(utts: list[Utterance], batch_size: int) -> list[list[Utterance]]:
    """Length-sorted batches (longest first, so a memory problem shows up at once)."""
    order = sorted(utts, key=lambda u: -u.duration)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def subset(utts: list[Utterance], n: int, seed: int) -> list[Utterance]:
    """A seeded subset of n utterances (all of them when n is 0 or larger than the set)."""
    if n <= 0 or n >= len(utts):
        return list(utts)
    rng = random.Random(f"subset:{seed}")
    picked = rng.sample(range(len(utts)), n)
    return [utts[i] for i in sorted(picked)]
