"""Where the time goes (section profile): torch.profiler's top operators over one training step (encoder
cache off, and frozen encoder) and one evaluation batch; the driver prints the first rows of each."""

from __future__ import annotations

import tempfile
from pathlib import Path

import bench_shared as shared


def worker_profile(args) -> dict:
    """Top operators of one training step (encoder cache off, and frozen-encoder) and one eval batch."""
    from torch.profiler import ProfilerActivity, profile

    from lorakit.experiment.features import Inputs
    from lorakit.experiment.evaluate import transcribe
    from lorakit.experiment.models import add_adapters, load_model
    from lorakit.experiment.train import make_optimizer, train_step

    cfg = shared.run_config(args)
    device, autocast = shared.device_and_autocast(cfg)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    sm = load_model(cfg.model, device=device)
    add_adapters(sm, cfg)
    optimizer, scheduler = make_optimizer(sm.model, cfg)
    batch = shared.clips(args.train, cfg.batch_size)
    cache = Path(tempfile.mkdtemp(prefix="lorakit-bench-enc-"))
    tables = {}

    def top(prof, n=10):
        rows = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -getattr(e, sort))
        total = sum(getattr(e, sort) for e in prof.key_averages()) or 1
        return [{"op": e.key, "shapes": str(e.input_shapes)[:90], "ms": round(getattr(e, sort) / 1000, 1),
                 "share": round(getattr(e, sort) / total, 3), "calls": e.count} for e in rows[:n]]

    for label, inputs in (("train_step_nocache", Inputs(sm, cfg.rms_target, None, device)), ("train_step_frozen", Inputs(sm, cfg.rms_target, cache, device))):
        inputs.model_inputs(batch)  # warm-up (and fills the encoder cache for the frozen case)
        with profile(activities=activities, record_shapes=True) as prof:
            train_step(sm, inputs, [batch], optimizer, scheduler, cfg.max_grad_norm, autocast)
        tables[label] = top(prof)
    batch = shared.clips(args.domain, cfg.eval_batch_size)
    for label, inputs in (("eval_batch_nocache", Inputs(sm, cfg.rms_target, None, device)), ("eval_batch_frozen", Inputs(sm, cfg.rms_target, cache, device))):
        inputs.model_inputs(batch)  # warm-up (fills the encoder cache for the frozen case)
        with profile(activities=activities, record_shapes=True) as prof:
            transcribe(sm, batch, inputs, cfg.eval_batch_size, cfg.max_new_tokens, desc=label, autocast=autocast)
        tables[label] = top(prof)
    return tables


WORKERS = {"profile": worker_profile}
