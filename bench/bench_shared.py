"""The set-up every bench section shares: the run config it measures, its clips, device and precision,
clocks that wait for the device, peak memory, and the untimed GPU warm-up step. Imported by the section
modules (bench_train, bench_eval, bench_baseline, bench_profile, bench_deploy) and the driver, bench.py."""

from __future__ import annotations

import resource
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_config(args, **over):
    """The RunConfig every section measures: the bench's model, clips, LR, batch and LoRA settings, with `over`."""
    from lorakit import RunConfig

    base = dict(model=args.model, train_manifest=args.train, domain_manifest=args.domain, heldout_manifest="",
                lr=args.lr, batch_size=args.batch_size, max_steps=args.steps, lora_r=16, lora_alpha=32.0,
                lora_dropout=0.05, warmup_ratio=0.1, seed=0, device=args.device, precision=args.precision,
                eval_batch_size=args.eval_batch_size, max_new_tokens=args.max_new_tokens, min_train_clips=1)
    merged = {**base, **over}
    return RunConfig(**merged, eval_interval=merged["max_steps"])


def clips(manifest: str, n: int):
    """A seeded subset of n utterances of a manifest (the same clips in every section)."""
    from lorakit.experiment.batches import subset
    from lorakit.experiment.manifests import read_manifest

    return subset(read_manifest(manifest).utterances, n, seed=0)


def device_and_autocast(cfg):
    """The torch device and autocast dtype (None: fp32) the kit picks for this config."""
    from lorakit.experiment.models import pick_autocast, pick_device

    device = pick_device(cfg.device)
    return device, pick_autocast(cfg.precision, device)


def sync(device) -> None:
    """Wait for the GPU before reading a clock (nothing on a CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def peak_gpu_mb() -> float | None:
    """torch's peak of allocated GPU memory in this worker (None when it never touched CUDA)."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def warm_up_step(model, model_in: dict, labels, device, autocast) -> None:
    """On a GPU the first forward/backward pays for loading kernels and setting up cuBLAS (often longer
    than the steps measured): one untimed pass, gradients dropped and no optimizer step, so both sides
    are timed in the steady state. Nothing on a CPU (the CPU figures stay as they were measured)."""
    import torch

    if device.type != "cuda":
        return
    model.train()
    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        loss = model(**model_in, labels=labels).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    sync(device)

