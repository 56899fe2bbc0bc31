"""From utterances to model inputs: features, labels, and the encoder-output cache that makes
decoder-only adapters cheap (which utterances form a batch is `batches.py`).

Every clip goes through `audio.load_audio` (load -> mono -> resample -> RMS normalize): the same
function for training, evaluation and inference. When no adapter touches the Whisper encoder, its
output for a clip never changes, so it is computed once and kept on disk, keyed by the encoder's
weights, the preprocessing, and the clip's bytes. Labels start with each clip's own language token
(`Utterance.language`) on a multilingual Whisper; a model without one refuses other languages up front.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..env import cache_root
from ..files import atomic_file
from .audio import audio_sha256, load_audio
from .manifests import Manifest, ManifestError, Utterance
from .models import SpeechModel

PREPROCESSING_VERSION = 1  # bump when load_audio's behaviour changes, to invalidate caches


def tensor_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's weights (exact bytes): identifies 'this encoder' across runs and processes."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def compute_fingerprint(device_type: str, autocast: torch.dtype | None) -> dict:
    """How the numbers are computed: a bf16 GPU pass and an fp32 CPU pass of the same weights give
    different outputs, so a cache entry of one is not reused by the other."""
    return {"device": device_type, "precision": str(autocast).removeprefix("torch.") if autocast is not None else "float32"}


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
    def cache_dir_for(root: Path, sm: SpeechModel, rms_target: float, device_type: str, autocast: torch.dtype | None) -> Path:
        """The encoder outputs' folder, keyed by the encoder's weights, the preprocessing, and the
        device type and autocast precision that computed them."""
        key = json.dumps({"encoder": tensor_fingerprint(sm.base.get_encoder()), "pre": preprocessing_fingerprint(sm, rms_target),
                          "compute": compute_fingerprint(device_type, autocast)}, sort_keys=True)
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
                with atomic_file(paths[i]) as tmp:  # a killed run never leaves half a cache entry
                    np.save(tmp, h)
        self.encoder_hits += len(utts) - len(missing)
        return torch.from_numpy(np.stack([np.load(p) for p in paths])).to(self.device)

    def labels(self, utts: list[Utterance]) -> torch.Tensor:
        """Label ids padded with -100 (ignored by the loss), each row behind its own clip's language token
        (multilingual Whisper; `Utterance.language`, None: the run's)."""
        ids = [self.sm.label_ids(u.text, u.language) for u in utts]
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


def check_clip_languages(sm: SpeechModel, manifests: dict[str, Manifest]) -> None:
    """Refuse, in one line naming the first such clip's file:line, clips spoken in a language the model cannot
    be prompted with (an English-only Whisper or a Moonshine takes only the run's; a multilingual Whisper
    only its own languages), before any clip is decoded."""
    for name, m in manifests.items():
        bad = [(u, problem) for u in m.utterances if (problem := sm.language_problem(u.language))]
        if bad:
            u, problem = bad[0]
            more = f" ({len(bad) - 1} more such clips in the {name} set)" if len(bad) > 1 else ""
            field = "language" if u.unit == "line" else "language column"
            raise ManifestError(u.manifest, u.line, field, problem + more, unit=u.unit)


def make_inputs(sm: SpeechModel, cfg: RunConfig, device: torch.device, frozen_encoder: bool, autocast: torch.dtype | None) -> Inputs:
    """A run's `Inputs`: with the Whisper encoder frozen (and `encoder_cache` on), encoder outputs
    come from the disk cache keyed by that encoder, the preprocessing, the device type and precision."""
    cached = sm.family == "whisper" and cfg.encoder_cache and frozen_encoder
    folder = Inputs.cache_dir_for(cache_root(), sm, cfg.rms_target, device.type, autocast) if cached else None
    return Inputs(sm, cfg.rms_target, folder, device)
