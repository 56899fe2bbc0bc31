"""On a CUDA GPU, what a user with one runs: train steps and evaluation under bf16/fp16 autocast through
accelerate, the fp16 gradient scaler's overflow branch, and the caches that must not mix precisions.

Skipped where torch sees no CUDA device (conftest); `bench/gpu_check.sh` runs them on the GPU machine.
The clips are synthetic (tones and noise, written here), so no espeak-ng is needed there: these tests
check mechanics on the tiny random models, never accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import write_manifest
from lorakit import RunConfig
from lorakit.experiment.distributed import make_accelerator
from lorakit.experiment.evaluate import evaluate
from lorakit.experiment.features import Inputs
from lorakit.experiment.manifests import read_manifest
from lorakit.experiment.models import add_adapters, load_model, pick_autocast, pick_device, plan_targets
from lorakit.experiment.train import make_optimizer, run, train_step

pytestmark = pytest.mark.gpu

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """16 training and 8 evaluation clips: a tone per clip plus noise, 1-1.5 s, with three-word texts."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("synthetic_clips")
    rng = np.random.default_rng(0)
    manifests = {}
    for name, n in (("train", 16), ("domain", 8)):
        rows = []
        for i in range(n):
            samples = int(16000 * (1.0 + 0.5 * rng.random()))
            t = np.arange(samples) / 16000
            x = 0.1 * np.sin(2 * np.pi * (180 + 35 * i) * t) + 0.02 * rng.standard_normal(samples)
            path = folder / name / f"{name}{i:03d}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, x.astype(np.float32), 16000, subtype="PCM_16")
            rows.append({"audio_filepath": f"{name}/{path.name}", "text": " ".join(rng.choice(WORDS, size=3)),
                         "duration": round(samples / 16000, 4), "speaker_id": f"tone{i % 3}"})
        manifests[name] = write_manifest(folder / f"{name}.jsonl", rows)
    return manifests


def _trainer(model_dir: Path, precision: str, cache: Path, **changes) -> SimpleNamespace:
    """A model on cuda with adapters, its optimizer prepared by the run's own accelerator (as `train.run`
    does), and its Inputs (with the encoder cache when the Whisper encoder is frozen)."""
    cfg = RunConfig(model=str(model_dir), device="cuda", precision=precision, lr=2e-2, warmup_ratio=0.0, max_steps=30,
                    eval_interval=30, lora_dropout=0.0, **changes)
    accelerator = make_accelerator(cfg)
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    sm = load_model(cfg.model, device=device)
    plan = plan_targets(sm.model, cfg.target_module_spec())  # the layers peft will adapt, matched as peft does
    frozen = sm.family == "whisper" and plan.encoder_frozen
    add_adapters(sm, cfg, plan)
    optimizer, scheduler = make_optimizer(sm.model, cfg)
    model, optimizer = accelerator.prepare(sm.model, optimizer)
    inputs = Inputs(sm, cfg.rms_target, cache if frozen else None, device)
    return SimpleNamespace(cfg=cfg, accelerator=accelerator, autocast=pick_autocast(cfg.precision, device), sm=sm, model=model,
                           optimizer=optimizer, scheduler=scheduler, inputs=inputs)


def _step(t: SimpleNamespace, batch) -> dict:
    return train_step(t.sm, t.inputs, [batch], t.optimizer, t.scheduler, t.cfg.max_grad_norm, t.autocast, t.accelerator, t.model)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("family", ["whisper", "moonshine"])
def test_train_steps_and_evaluation_run_in_the_autocast_dtype(family, precision, clips, whisper_dir, moonshine_dir, tmp_path):
    # Whisper as a run trains it by default (decoder adapters, encoder outputs cached); Moonshine on both sides
    t = _trainer(whisper_dir if family == "whisper" else moonshine_dir, precision, tmp_path / "enc",
                 target_modules="decoder" if family == "whisper" else "")
    assert t.autocast == DTYPES[precision]
    seen: list[torch.dtype] = []
    hook = t.sm.base.proj_out.register_forward_hook(lambda module, args, out: seen.append(out.dtype))  # the logits
    batch = read_manifest(clips["train"]).utterances[:4]
    outs = [_step(t, batch) for _ in range(20)]
    losses = [o["loss"] for o in outs]
    assert seen and set(seen) == {t.autocast}, seen  # every training forward ran in the autocast dtype
    assert all(math.isfinite(x) for x in losses) and losses[-1] < 0.7 * losses[0], losses
    trainable = [p for p in t.sm.model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 and p.is_cuda for p in trainable)  # adapter weights stay fp32, on the GPU

    seen.clear()
    utts = read_manifest(clips["domain"]).utterances
    result = evaluate(t.sm, utts, t.inputs, 4, 8, autocast=t.autocast)
    hook.remove()
    assert [r["id"] for r in result.rows] == [u.id for u in utts] and all(isinstance(r["hyp"], str) for r in result.rows)
    assert seen and set(seen) == {t.autocast}, seen  # generation too
    if family == "whisper":  # the encoder cache served the evaluation: no clip encoded twice
        assert t.inputs.cache_dir is not None and t.inputs.encoder_misses == len({u.audio_filepath for u in batch + utts})


def test_fp16_gradient_scaler_skips_an_overflow_step_and_training_goes_on(clips, whisper_dir, tmp_path):
    t = _trainer(whisper_dir, "fp16", tmp_path / "enc", target_modules="decoder")
    scaler = t.accelerator.scaler
    assert scaler is not None  # fp16 on cuda: accelerate's gradient scaler
    batch = read_manifest(clips["train"]).utterances[:4]
    for _ in range(3):  # the scaler settles (its first scale may overflow by itself)
        _step(t, batch)
    trainable = [p for p in t.sm.model.parameters() if p.requires_grad]
    armed = [True]

    def poison(grad):  # one backward pass produces an infinite gradient, as an fp16 overflow does
        if armed[0]:
            armed[0] = False
            return torch.full_like(grad, float("inf"))
        return grad

    handle = trainable[0].register_hook(poison)
    before, scale = [p.detach().clone() for p in trainable], scaler.get_scale()
    out = _step(t, batch)
    assert out.get("overflow") is True and math.isfinite(out["loss"]) and not math.isfinite(out["grad_norm"]), out
    assert t.accelerator.optimizer_step_was_skipped
    assert all(torch.equal(a, p) for a, p in zip(before, trainable))  # no weight moved, none became inf
    assert scaler.get_scale() == scale * scaler.get_backoff_factor()  # the scale backed off

    later = [_step(t, batch) for _ in range(4)]
    handle.remove()
    assert all(math.isfinite(o["loss"]) for o in later) and not all(o.get("overflow") for o in later), later
    assert all(torch.isfinite(p).all() for p in trainable)
    assert any(not torch.equal(a, p) for a, p in zip(before, trainable))  # training resumed
    assert later[-1]["loss"] < out["loss"], later


def test_auto_device_and_precision_pick_cuda_and_bf16():
    device = pick_device("auto")
    assert device.type == "cuda"
    assert pick_autocast("auto", device) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)


def test_fp32_and_bf16_runs_keep_separate_encoder_caches_and_baselines(clips, whisper_dir, tmp_path, monkeypatch, capsys):
    """The encoder outputs and the baseline WER depend on the precision they were computed in: a bf16 run
    must not reuse an fp32 run's (nor the reverse), while a second fp32 run does reuse the first's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LORAKIT_CACHE", str(cache))
    base = dict(model=str(whisper_dir), train_manifest=str(clips["train"]), domain_manifest=str(clips["domain"]), heldout_manifest="",
                target_modules="decoder", max_steps=1, eval_interval=1, batch_size=2, eval_batch_size=4, max_new_tokens=4,
                min_train_clips=2, device="cuda", output_dir=str(tmp_path / "runs"))
    outputs = {}
    for run_id, precision in (("fp32", "fp32"), ("bf16", "bf16"), ("fp32-again", "fp32")):
        run(RunConfig(**base, precision=precision, run_id=run_id))
        outputs[run_id] = capsys.readouterr().out
    assert "from the shared cache" in outputs["fp32-again"]  # the detection works: the same precision hits
    assert "from the shared cache" not in outputs["bf16"], outputs["bf16"]
    assert len(list((cache / "baselines").glob("*.jsonl"))) == 2
    assert len([d for d in (cache / "encoder").iterdir() if d.is_dir()]) == 2
