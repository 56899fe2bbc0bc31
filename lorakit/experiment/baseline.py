"""The shared baseline: the base model's step-0 WER on an eval set, computed once per (model,
manifest, preprocessing, generation (with any text prompt), normalizer, device type and precision) and reused by every run that asks for the same.
`baseline_key` lists exactly what a baseline depends on; nothing else goes into it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..config import RunConfig
from ..env import cache_root
from ..files import read_jsonl, write_jsonl
from .distributed import broadcast, evaluate_all
from ..scoring import normalizer_name
from .evaluate import ROW_VERSION, EvalResult, warn_cut
from .features import Inputs, compute_fingerprint, preprocessing_fingerprint, tensor_fingerprint
from .manifests import Utterance
from .models import SpeechModel


def baseline_key(sm: SpeechModel, manifest_sha: str, utt_ids: list[str], rms_target: float, max_new_tokens: int, *,
                 device_type: str, autocast, model_fingerprint: str | None = None) -> str:
    """What the baseline depends on: the model's weights, the manifest's bytes (and which lines are
    used), the preprocessing, the generation settings, the normalizer, and the device type and
    autocast precision that decode (a bf16 GPU baseline is not an fp32 one). Nothing else.

    `model_fingerprint` is `tensor_fingerprint(sm.base)` when the caller already has it: hashing every
    weight costs 0.4 s for whisper-tiny and grows with the model, so a run hashes once for all its sets.
    """
    parts = {
        "model": model_fingerprint or tensor_fingerprint(sm.base),
        "manifest": manifest_sha,
        "utterances": hashlib.sha256("\n".join(utt_ids).encode()).hexdigest(),
        "preprocessing": preprocessing_fingerprint(sm, rms_target),
        "generation": {**sm.base.generation_config.to_diff_dict(), "max_new_tokens": max_new_tokens,
                       **({"prompt_ids": sm.prompt_ids.tolist()} if sm.prompt_ids is not None else {})},
        "normalizer": normalizer_name(sm.text_language),
        "rows": ROW_VERSION,  # what a prediction row holds (cut_at_tokens since 2)
        "compute": compute_fingerprint(device_type, autocast),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _path(root: Path, key: str) -> Path:
    return root / "baselines" / f"{key}.jsonl"


def cached_baseline(root: Path, key: str) -> EvalResult | None:
    path = _path(root, key)
    return EvalResult(read_jsonl(path)) if path.exists() else None


def store_baseline(root: Path, key: str, result: EvalResult) -> None:
    write_jsonl(_path(root, key), result.rows)


def shared_baseline(sm: SpeechModel, inputs: Inputs, name: str, utts: list[Utterance], manifest_sha: str, cfg: RunConfig,
                    autocast, accelerator=None, model_fingerprint: str | None = None) -> EvalResult:
    """Step-0 WER from the shared cache, or computed (and stored) when no run has computed it yet.

    Under several processes the main one looks in the cache for all (another run may store the
    entry between two processes' looks), they compute it together, and the main one stores it.
    """
    key = baseline_key(sm, manifest_sha, [u.id for u in utts], cfg.rms_target, cfg.max_new_tokens,
                       device_type=inputs.device.type, autocast=autocast, model_fingerprint=model_fingerprint)
    cached = broadcast(cached_baseline(cache_root(), key), accelerator)
    if cached is not None:
        print(f"baseline {name}: from the shared cache ({key})")
        if accelerator is None or accelerator.is_main_process:
            warn_cut(cached, f"baseline {name}", cfg.max_new_tokens)
        return cached
    result = evaluate_all(sm, utts, inputs, cfg, f"baseline {name}", autocast, accelerator)
    if accelerator is None or accelerator.is_main_process:
        store_baseline(cache_root(), key, result)
    return result
