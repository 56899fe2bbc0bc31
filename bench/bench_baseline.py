"""The shared baseline's cache (section baseline-cache): the first evaluation of the base model misses,
the second hits, and a changed manifest, utterance list, RMS target, generation limit, precision or
device each gives another key (must miss)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import bench_shared as shared


def worker_baseline_cache(args) -> dict:
    """The shared baseline's cache: miss, hit, and the keys that must change."""
    import hashlib

    import torch

    from lorakit.experiment.baseline import baseline_key, cached_baseline, shared_baseline
    from lorakit.experiment.features import Inputs
    from lorakit.experiment.models import load_model

    cache = Path(tempfile.mkdtemp(prefix="lorakit-bench-cache-"))
    os.environ["LORAKIT_CACHE"] = str(cache)
    cfg = shared.run_config(args)
    device, autocast = shared.device_and_autocast(cfg)
    sm = load_model(cfg.model, device=device)
    utts = shared.clips(args.domain, args.eval_n)
    sha = hashlib.sha256(Path(args.domain).read_bytes()).hexdigest()
    inputs = Inputs(sm, cfg.rms_target, None, device)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        result = shared_baseline(sm, inputs, "domain", utts, sha, cfg, autocast)
        times.append(time.perf_counter() - start)
    ids = [u.id for u in utts]
    run = {"device_type": device.type, "autocast": autocast}
    key = baseline_key(sm, sha, ids, cfg.rms_target, cfg.max_new_tokens, **run)
    changed = {
        "manifest": baseline_key(sm, hashlib.sha256(Path(args.domain).read_bytes() + b"\n").hexdigest(), ids, cfg.rms_target, cfg.max_new_tokens, **run),
        "utterances": baseline_key(sm, sha, ids[:-1], cfg.rms_target, cfg.max_new_tokens, **run),
        "rms_target": baseline_key(sm, sha, ids, cfg.rms_target * 1.1, cfg.max_new_tokens, **run),
        "max_new_tokens": baseline_key(sm, sha, ids, cfg.rms_target, cfg.max_new_tokens // 2, **run),
        "precision": baseline_key(sm, sha, ids, cfg.rms_target, cfg.max_new_tokens, **{**run, "autocast": torch.bfloat16 if autocast is None else None}),
        "device": baseline_key(sm, sha, ids, cfg.rms_target, cfg.max_new_tokens, **{**run, "device_type": "cuda" if device.type == "cpu" else "cpu"}),
    }
    return {"miss_seconds": times[0], "hit_seconds": times[1], "wer": result.wer, "n": len(utts),
            "changed_key_misses": {k: k2 != key and cached_baseline(cache, k2) is None for k, k2 in changed.items()}}


def baseline_rows(bc: dict, rows: list) -> None:
    """The baseline-cache rows of the summary table."""
    rows.append(("baseline: miss / hit (s)", f"{bc['miss_seconds']:.1f} / {bc['hit_seconds']:.3f}", "hit ~ 0 s"))
    rows.append(("baseline: changed key misses", ", ".join(f"{k} {'miss' if v else 'HIT (wrong)'}" for k, v in bc["changed_key_misses"].items()), "all miss"))


WORKERS = {"baseline-cache": worker_baseline_cache}
