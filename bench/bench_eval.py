"""Evaluation throughput: lorakit's batched, length-sorted evaluation against batch-1 `generate` (the
old team's runner), same model and clips, hypotheses compared clip for clip. Sections:

  eval-batch1     generate() one clip at a time, features extracted per clip
  eval-lorakit    lorakit's evaluation, encoder cache off, then frozen-encoder cold and warm

Ratios: eval_{plain,frozen_cold,frozen_warm}_vs_batch1 and eval_*_identical_hyps.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import bench_shared as shared


def worker_eval_batch1(args) -> dict:
    """How the old runner evaluated: one clip at a time, features extracted for each call."""
    import torch

    from lorakit.experiment.evaluate import score
    from lorakit.experiment.models import load_model

    cfg = shared.run_config(args)
    device, autocast = shared.device_and_autocast(cfg)
    sm = load_model(cfg.model, device=device)
    sm.model.eval()
    utts = shared.clips(args.domain, args.eval_n)
    from lorakit.experiment.audio import load_audio

    def one(u):
        audio = load_audio(u.audio_filepath, sampling_rate=sm.sampling_rate, rms_target=cfg.rms_target)
        feats = {k: v.to(device) for k, v in sm.features([audio]).items()}
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            return sm.decode(sm.generate(feats, cfg.max_new_tokens))

    if device.type == "cuda":  # untimed: kernels loaded, cuBLAS set up (see shared.warm_up_step)
        one(utts[0])
    hyps = []
    shared.sync(device)
    start = time.perf_counter()
    for u in utts:
        hyps += one(u)
    shared.sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "utt_per_s": len(utts) / seconds, "n": len(utts), "wer": score(utts, hyps).wer, "hyps": hyps}


def worker_eval_lorakit(args) -> dict:
    """lorakit's `evaluate`: plain (features each time), then frozen-encoder mode cold and warm."""
    from lorakit.experiment.features import Inputs
    from lorakit.experiment.evaluate import transcribe, score
    from lorakit.experiment.models import load_model

    cfg = shared.run_config(args)
    device, autocast = shared.device_and_autocast(cfg)
    sm = load_model(cfg.model, device=device)
    utts = shared.clips(args.domain, args.eval_n)
    cache = Path(tempfile.mkdtemp(prefix="lorakit-bench-enc-"))
    out = {"n": len(utts)}
    if device.type == "cuda":  # untimed, encoder cache untouched (see shared.warm_up_step)
        transcribe(sm, utts[: cfg.eval_batch_size], Inputs(sm, cfg.rms_target, None, device), cfg.eval_batch_size,
                   cfg.max_new_tokens, desc="warm-up", autocast=autocast)
    for label, inputs in (("plain", Inputs(sm, cfg.rms_target, None, device)), ("frozen_cold", Inputs(sm, cfg.rms_target, cache, device)),
                          ("frozen_warm", Inputs(sm, cfg.rms_target, cache, device))):
        shared.sync(device)
        start = time.perf_counter()
        hyps = transcribe(sm, utts, inputs, cfg.eval_batch_size, cfg.max_new_tokens, desc=label, autocast=autocast)
        shared.sync(device)
        seconds = time.perf_counter() - start
        out[label] = {"seconds": seconds, "utt_per_s": len(utts) / seconds, "wer": score(utts, hyps).wer, "hyps": hyps}
    return out


def eval_rows(r: dict, rows: list, ratios: dict) -> None:
    """The evaluation rows of the summary table and their ratios (needs eval-batch1 and eval-lorakit)."""
    b1, ev = r["eval-batch1"], r["eval-lorakit"]
    rows.append(("eval: batch-1 generate (utt/s)", f"{b1['utt_per_s']:.2f}  (WER {100 * b1['wer']:.2f}, n={b1['n']})", ""))
    for label in ("plain", "frozen_cold", "frozen_warm"):
        ratios[f"eval_{label}_vs_batch1"] = ev[label]["utt_per_s"] / b1["utt_per_s"]
        same = sum(a == b for a, b in zip(ev[label]["hyps"], b1["hyps"]))
        ratios[f"eval_{label}_identical_hyps"] = same / b1["n"]
        rows.append((f"eval: lorakit {label.replace('_', ' ')} (utt/s)",
                     f"{ev[label]['utt_per_s']:.2f}  ({ratios[f'eval_{label}_vs_batch1']:.2f}x batch-1; "
                     f"WER {100 * ev[label]['wer']:.2f} vs {100 * b1['wer']:.2f}; {same}/{b1['n']} hyps identical)",
                     {"plain": ">= 1.5x (CPU)", "frozen_cold": "", "frozen_warm": ">= 4x"}[label]))


WORKERS = {"eval-batch1": worker_eval_batch1, "eval-lorakit": worker_eval_lorakit}
