"""lorakit against what a user would run instead, side by side on one machine, same model, data and settings.

    python bench/bench.py                 # the figures in bench/README.md (about 25 min on 2 CPU cores)
    python bench/bench.py --quick         # a minute or two: checks that every section still works (CI)
    python bench/bench.py --model openai/whisper-small --train my/train.jsonl --domain my/dev.jsonl --device cuda

Every measurement runs in a fresh subprocess (`--worker NAME`), so each has its own peak RSS, its own
warm-up and no cache left in memory by another. Sections:

  train-hf        HF Seq2SeqTrainer + peft, log-mel features precomputed with `datasets.map` (as in the
                  transformers speech-recognition example), same model, LoRA config, clips, batch, steps, LR
  train-lorakit   lorakit's loop (train_step), decoder-only LoRA: encoder cache cold (first epoch computes
                  encoder outputs), then the same number of steps warm
  train-nocache   lorakit's loop with the encoder cache off: the same work per step as train-hf
  train-full      lorakit's loop with LoRA on encoder and decoder (the encoder trains: nothing to cache)
  eval-batch1     generate() one clip at a time, features extracted per clip (the old team's runner)
  eval-lorakit    lorakit's evaluation (batched, length-sorted), encoder cache off, then frozen-encoder
                  cold and warm; hypotheses compared with eval-batch1
  baseline-cache  the shared baseline: first run (miss), second run (hit), and the keys of a changed
                  manifest, RMS target and generation limit (must miss)
  profile         torch.profiler over one training step (cache off, and frozen) and one eval batch

With `--deploy RUN` (a run id such as demo, or a run folder), the shipped forms of that run's adapter
instead (`lorakit export`, made first where missing), each on the same seeded clips of the run's domain
set, the same CPU threads (`--threads`), batches, prompt and greedy settings, with the WER beside each:

  deploy-unmerged     the adapter injected in PyTorch (peft), as the run evaluated it: the reference
  deploy-merged       the merged transformers model (`export/merged`)
  deploy-ct2-float32  CTranslate2, float32 weights (`export/ct2-float32`)
  deploy-ct2-int8     CTranslate2, int8 weights (`export/ct2-int8`)

Results: a table on stdout and `bench/results/latest.json` (`--out` to change). A section that fails is
reported (its error and stderr in the JSON), the others still run, and the exit code is 1.

On a GPU (`--device cuda`; bench/gpu_check.sh runs it on the device machine): every timed section first
runs one untimed training step or evaluation batch (kernel loading and cuBLAS set-up cost more than the
steps measured), the clocks wait for the device (`torch.cuda.synchronize`), and each worker reports
torch's peak of allocated GPU memory (`peak_gpu_mb`) beside its peak RSS. Nothing changes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ["train-hf", "train-lorakit", "train-nocache", "train-full", "eval-batch1", "eval-lorakit", "baseline-cache", "profile"]
DEPLOY_FORMS = ["unmerged", "merged", "ct2-float32", "ct2-int8"]
DEPLOY_WORKERS = ["deploy-export"] + [f"deploy-{f}" for f in DEPLOY_FORMS]


# --- shared set-up ---------------------------------------------------------------------------------
def _cfg(args, **over):
    from lorakit import RunConfig

    base = dict(model=args.model, train_manifest=args.train, domain_manifest=args.domain, heldout_manifest="",
                lr=args.lr, batch_size=args.batch_size, max_steps=args.steps, lora_r=16, lora_alpha=32.0,
                lora_dropout=0.05, warmup_ratio=0.1, seed=0, device=args.device, precision=args.precision,
                eval_batch_size=args.eval_batch_size, max_new_tokens=args.max_new_tokens, min_train_clips=1)
    merged = {**base, **over}
    return RunConfig(**merged, eval_interval=merged["max_steps"])


def _utts(manifest: str, n: int):
    from lorakit.experiment.batches import subset
    from lorakit.experiment.manifests import read_manifest

    return subset(read_manifest(manifest).utterances, n, seed=0)


def _device_and_autocast(cfg):
    from lorakit.experiment.models import pick_autocast, pick_device

    device = pick_device(cfg.device)
    return device, pick_autocast(cfg.precision, device)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _peak_gpu_mb() -> float | None:
    """torch's peak of allocated GPU memory in this worker (None when it never touched CUDA)."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def _warm_up_step(model, model_in: dict, labels, device, autocast) -> None:
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
    _sync(device)


# --- training ---------------------------------------------------------------------------------------
def _lorakit_loop(args, target_modules: str, encoder_cache: bool, passes: int) -> dict:
    """`passes` runs of args.steps steps each, one model: pass 1 is cold (empty caches), later ones warm."""
    from lorakit.experiment.batches import train_batches
    from lorakit.experiment.features import Inputs
    from lorakit.experiment.models import add_adapters, load_model
    from lorakit.experiment.train import make_optimizer, seed_everything, train_step

    # every lorakit loop schedules two passes, so the cache-on and cache-off loss curves are comparable
    cfg = _cfg(args, target_modules=target_modules, encoder_cache=encoder_cache, max_steps=args.steps * 2)
    device, autocast = _device_and_autocast(cfg)
    seed_everything(cfg.seed)
    sm = load_model(cfg.model, device=device)
    add_adapters(sm, cfg)
    optimizer, scheduler = make_optimizer(sm.model, cfg)
    cache = Path(tempfile.mkdtemp(prefix="lorakit-bench-enc-")) if encoder_cache else None
    inputs = Inputs(sm, cfg.rms_target, cache, device)
    utts = _utts(args.train, args.train_n)
    plain = Inputs(sm, cfg.rms_target, None, device)  # the warm-up leaves the encoder cache cold
    _warm_up_step(sm.model, plain.features(utts[: cfg.batch_size]), plain.labels(utts[: cfg.batch_size]), device, autocast)
    batches = train_batches(utts, cfg.batch_size, cfg.seed)
    out: dict = {"losses": [], "passes": []}
    for _ in range(passes):
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            out["losses"].append(train_step(sm, inputs, [next(batches)], optimizer, scheduler, cfg.max_grad_norm, autocast)["loss"])
        _sync(device)
        seconds = time.perf_counter() - start
        out["passes"].append({"seconds": seconds, "utt_per_s": args.steps * cfg.batch_size / seconds})
    out["trainable_params"] = sum(p.numel() for p in sm.model.parameters() if p.requires_grad)
    return out


def worker_train_lorakit(args) -> dict:
    return _lorakit_loop(args, "decoder", encoder_cache=True, passes=2)


def worker_train_nocache(args) -> dict:
    return _lorakit_loop(args, "decoder", encoder_cache=False, passes=1)


def worker_train_full(args) -> dict:
    return _lorakit_loop(args, "", encoder_cache=False, passes=1)


def worker_train_hf(args) -> dict:
    """The usual alternative: transformers' Seq2SeqTrainer over a `datasets` dataset of precomputed
    log-mel features, peft LoRA on the same modules. lorakit supplies only the model loading (same
    weights) and `load_audio` (same RMS-normalized samples), so both train on identical inputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    from lorakit.experiment.audio import load_audio
    from lorakit.experiment.models import load_model, resolve_target_modules

    cfg = _cfg(args)
    device, autocast = _device_and_autocast(cfg)
    torch.manual_seed(cfg.seed)
    sm = load_model(cfg.model, device=device)
    fe = sm.processor.feature_extractor
    utts = _utts(args.train, args.train_n)

    def prepare(example):
        audio = load_audio(example["audio_filepath"], sampling_rate=fe.sampling_rate, rms_target=cfg.rms_target)
        example["input_features"] = fe(audio, sampling_rate=fe.sampling_rate).input_features[0]
        example["labels"] = sm.label_ids(example["text"])
        return example

    start = time.perf_counter()
    rows = [{"audio_filepath": u.audio_filepath, "text": u.text} for u in utts]
    try:
        import datasets
    except Exception as exc:  # noqa: BLE001 -- e.g. a GPU machine whose pyarrow is too old for the datasets that travels
        datasets, data_path = None, f"list (datasets failed to import: {type(exc).__name__}: {exc})"
    if datasets is not None:
        ds, data_path = datasets.Dataset.from_list(rows).map(prepare, remove_columns=["audio_filepath", "text"]), "datasets.map"
    else:  # the same features in a plain list (neither path is timed); the trainer is unchanged
        ds = [{k: v for k, v in prepare(dict(r)).items() if k in ("input_features", "labels")} for r in rows]
    map_seconds = time.perf_counter() - start

    def collate(rows):  # DataCollatorSpeechSeq2SeqWithPadding of the example
        feats = fe.pad([{"input_features": r["input_features"]} for r in rows], return_tensors="pt")
        width = max(len(r["labels"]) for r in rows)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
        return {"input_features": feats["input_features"], "labels": labels}

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=resolve_target_modules(sm.model, cfg.target_module_spec()), bias="none")
    model = get_peft_model(sm.model, lora)
    first = collate([ds[i] for i in range(min(cfg.batch_size, len(ds)))])
    _warm_up_step(model, {"input_features": first["input_features"].to(device)}, first["labels"].to(device), device, autocast)
    out_dir = tempfile.mkdtemp(prefix="lorakit-bench-hf-")
    targs = Seq2SeqTrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps, learning_rate=cfg.lr,
        warmup_steps=int(cfg.warmup_ratio * cfg.max_steps), lr_scheduler_type="linear", max_grad_norm=cfg.max_grad_norm,
        weight_decay=0.0, logging_steps=1, save_strategy="no", eval_strategy="no", report_to=[], seed=cfg.seed,
        dataloader_num_workers=0, remove_unused_columns=False, label_names=["labels"], use_cpu=device.type == "cpu",
        bf16=autocast == torch.bfloat16, fp16=autocast == torch.float16, disable_tqdm=True,
    )

    class Clock(TrainerCallback):  # training time only: not the trainer's set-up
        def on_train_begin(self, *a, **k):
            _sync(device)
            self.start = time.perf_counter()

        def on_train_end(self, *a, **k):
            _sync(device)
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=ds, data_collator=collate, callbacks=[clock])
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"map_seconds": map_seconds, "data_path": data_path, "losses": losses,
            "passes": [{"seconds": clock.seconds, "utt_per_s": cfg.max_steps * cfg.batch_size / clock.seconds}]}


# --- evaluation -------------------------------------------------------------------------------------
def worker_eval_batch1(args) -> dict:
    """How the old runner evaluated: one clip at a time, features extracted for each call."""
    import torch

    from lorakit.experiment.evaluate import score
    from lorakit.experiment.models import load_model

    cfg = _cfg(args)
    device, autocast = _device_and_autocast(cfg)
    sm = load_model(cfg.model, device=device)
    sm.model.eval()
    utts = _utts(args.domain, args.eval_n)
    from lorakit.experiment.audio import load_audio

    def one(u):
        audio = load_audio(u.audio_filepath, sampling_rate=sm.sampling_rate, rms_target=cfg.rms_target)
        feats = {k: v.to(device) for k, v in sm.features([audio]).items()}
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            return sm.decode(sm.generate(feats, cfg.max_new_tokens))

    if device.type == "cuda":  # untimed: kernels loaded, cuBLAS set up (see _warm_up_step)
        one(utts[0])
    hyps = []
    _sync(device)
    start = time.perf_counter()
    for u in utts:
        hyps += one(u)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "utt_per_s": len(utts) / seconds, "n": len(utts), "wer": score(utts, hyps).wer, "hyps": hyps}


def worker_eval_lorakit(args) -> dict:
    """lorakit's `evaluate`: plain (features each time), then frozen-encoder mode cold and warm."""
    from lorakit.experiment.features import Inputs
    from lorakit.experiment.evaluate import transcribe, score
    from lorakit.experiment.models import load_model

    cfg = _cfg(args)
    device, autocast = _device_and_autocast(cfg)
    sm = load_model(cfg.model, device=device)
    utts = _utts(args.domain, args.eval_n)
    cache = Path(tempfile.mkdtemp(prefix="lorakit-bench-enc-"))
    out = {"n": len(utts)}
    if device.type == "cuda":  # untimed, encoder cache untouched (see _warm_up_step)
        transcribe(sm, utts[: cfg.eval_batch_size], Inputs(sm, cfg.rms_target, None, device), cfg.eval_batch_size,
                   cfg.max_new_tokens, desc="warm-up", autocast=autocast)
    for label, inputs in (("plain", Inputs(sm, cfg.rms_target, None, device)), ("frozen_cold", Inputs(sm, cfg.rms_target, cache, device)),
                          ("frozen_warm", Inputs(sm, cfg.rms_target, cache, device))):
        _sync(device)
        start = time.perf_counter()
        hyps = transcribe(sm, utts, inputs, cfg.eval_batch_size, cfg.max_new_tokens, desc=label, autocast=autocast)
        _sync(device)
        seconds = time.perf_counter() - start
        out[label] = {"seconds": seconds, "utt_per_s": len(utts) / seconds, "wer": score(utts, hyps).wer, "hyps": hyps}
    return out


def worker_baseline_cache(args) -> dict:
    """The shared baseline's cache: miss, hit, and the keys that must change."""
    import hashlib

    import torch

    from lorakit.experiment.baseline import baseline_key, cached_baseline, shared_baseline
    from lorakit.experiment.features import Inputs
    from lorakit.experiment.models import load_model

    cache = Path(tempfile.mkdtemp(prefix="lorakit-bench-cache-"))
    os.environ["LORAKIT_CACHE"] = str(cache)
    cfg = _cfg(args)
    device, autocast = _device_and_autocast(cfg)
    sm = load_model(cfg.model, device=device)
    utts = _utts(args.domain, args.eval_n)
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


def worker_profile(args) -> dict:
    """Top operators of one training step (encoder cache off, and frozen-encoder) and one eval batch."""
    from torch.profiler import ProfilerActivity, profile

    from lorakit.experiment.features import Inputs
    from lorakit.experiment.evaluate import transcribe
    from lorakit.experiment.models import add_adapters, load_model
    from lorakit.experiment.train import make_optimizer, train_step

    cfg = _cfg(args)
    device, autocast = _device_and_autocast(cfg)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    sm = load_model(cfg.model, device=device)
    add_adapters(sm, cfg)
    optimizer, scheduler = make_optimizer(sm.model, cfg)
    batch = _utts(args.train, cfg.batch_size)
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
    batch = _utts(args.domain, cfg.eval_batch_size)
    for label, inputs in (("eval_batch_nocache", Inputs(sm, cfg.rms_target, None, device)), ("eval_batch_frozen", Inputs(sm, cfg.rms_target, cache, device))):
        inputs.model_inputs(batch)  # warm-up (fills the encoder cache for the frozen case)
        with profile(activities=activities, record_shapes=True) as prof:
            transcribe(sm, batch, inputs, cfg.eval_batch_size, cfg.max_new_tokens, desc=label, autocast=autocast)
        tables[label] = top(prof)
    return tables


# --- shipped forms (--deploy RUN) -------------------------------------------------------------------
def worker_deploy_export(args) -> dict:
    """Untimed: export the forms the deploy sections measure, where the run has none from this adapter."""
    from lorakit.deploy.export import exported_forms, export_ct2, export_merged
    from lorakit.deploy.transcribe import resolve_source

    src = resolve_source(None, args.deploy)
    have, _ = exported_forms(src)
    made = []
    for form in DEPLOY_FORMS[1:]:
        if form not in have:
            export_merged(src) if form == "merged" else export_ct2(src, form.split("-", 1)[1])
            made.append(form)
    return {"exported": made, "found": sorted(have)}


def _deploy_worker(args, form: str) -> dict:
    """One form decodes the run's seeded domain clips through `decode_utterances` (the kit's audio,
    features, length-sorted batches, greedy), on `--threads` CPU threads; one untimed clip first."""
    import torch

    from lorakit.deploy.export import exported_forms
    from lorakit.deploy.parity import load_form, parity_sample
    from lorakit.deploy.transcribe import decode_utterances, load_source, resolve_source
    from lorakit.experiment.evaluate import score

    torch.set_num_threads(args.threads)
    src = resolve_source(None, args.deploy)
    utts = parity_sample(src, args.eval_n)["domain"]
    device = torch.device("cpu")
    if form == "unmerged":
        sm = load_source(src, device)
    else:
        forms, stale = exported_forms(src)
        if form not in forms:
            raise SystemExit(f"{args.deploy}: no export/{form} from this adapter ({stale.get(form, 'not exported')})")
        sm = load_form(form, forms[form], device, src)
    decode_utterances(sm, utts[:1], src.rms_target, src.max_new_tokens, 1, device, None, progress=False)
    start, cpu_start = time.perf_counter(), time.process_time()
    hyps, _ = decode_utterances(sm, utts, src.rms_target, src.max_new_tokens, args.eval_batch_size, device, None, progress=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model_seconds, model_cpu_seconds = _time_generate(sm, utts, src, args.eval_batch_size)
    result = score(utts, hyps)
    # CPU seconds (all threads of this process, CTranslate2's included) barely move when other programs
    # share the cores; wall-clock utt/s does: both are reported
    return {"form": form, "n": len(utts), "seconds": seconds, "utt_per_s": len(utts) / seconds, "cpu_seconds": cpu_seconds,
            "utt_per_cpu_s": len(utts) / cpu_seconds, "model_seconds": model_seconds, "model_utt_per_s": len(utts) / model_seconds,
            "model_utt_per_cpu_s": len(utts) / model_cpu_seconds, "wer": result.wer,
            **{k: result.summary()[k] for k in ("sub", "del", "ins", "ref_words")}, "threads": torch.get_num_threads(),
            "compute_type": getattr(sm.model, "compute_type", "float32 (PyTorch)"), "hyps": hyps}


def _time_generate(sm, utts, src, batch_size: int) -> tuple[float, float]:
    """The model alone: the same batches' features computed first (untimed), then only generation timed
    (wall and CPU seconds). End to end, every form shares the kit's audio loading and Python feature
    extraction, a fixed cost that hides how much faster the engine itself is."""
    from lorakit.experiment.audio import load_audio
    from lorakit.experiment.batches import eval_batches

    feats = [sm.features([load_audio(u.audio_filepath, sampling_rate=sm.sampling_rate, rms_target=src.rms_target) for u in b])
             for b in eval_batches(utts, batch_size)]
    start, cpu_start = time.perf_counter(), time.process_time()
    for f in feats:
        sm.generate(f, src.max_new_tokens)
    return time.perf_counter() - start, time.process_time() - cpu_start


def worker_deploy_unmerged(args) -> dict:
    return _deploy_worker(args, "unmerged")


def worker_deploy_merged(args) -> dict:
    return _deploy_worker(args, "merged")


def worker_deploy_ct2_float32(args) -> dict:
    return _deploy_worker(args, "ct2-float32")


def worker_deploy_ct2_int8(args) -> dict:
    return _deploy_worker(args, "ct2-int8")


def _deploy_rows(r: dict, rows: list, ratios: dict) -> None:
    ref = r["deploy-unmerged"]
    for form in DEPLOY_FORMS:
        if f"deploy-{form}" not in r:
            continue
        f = r[f"deploy-{form}"]
        ratios[f"deploy_{form}_vs_unmerged"] = f["utt_per_s"] / ref["utt_per_s"]
        ratios[f"deploy_{form}_cpu_vs_unmerged"] = f["utt_per_cpu_s"] / ref["utt_per_cpu_s"]
        ratios[f"deploy_{form}_model_vs_unmerged"] = f["model_utt_per_s"] / ref["model_utt_per_s"]
        ratios[f"deploy_{form}_model_cpu_vs_unmerged"] = f["model_utt_per_cpu_s"] / ref["model_utt_per_cpu_s"]
        ratios[f"deploy_{form}_wer_delta_pts"] = (f["wer"] - ref["wer"]) * 100
        same = sum(a == b for a, b in zip(f["hyps"], ref["hyps"]))
        target = ">= 3x at WER within 0.5 pt" if form == "ct2-int8" else ""
        rows.append((f"deploy: {form} ({f['compute_type']}, {f['threads']} threads) (utt/s; utt per CPU-s)",
                     f"{f['utt_per_s']:.2f}  ({ratios[f'deploy_{form}_vs_unmerged']:.2f}x unmerged; per CPU-s {f['utt_per_cpu_s']:.2f} = "
                     f"{ratios[f'deploy_{form}_cpu_vs_unmerged']:.2f}x; model alone {f['model_utt_per_s']:.2f} utt/s = "
                     f"{ratios[f'deploy_{form}_model_vs_unmerged']:.2f}x, per CPU-s {ratios[f'deploy_{form}_model_cpu_vs_unmerged']:.2f}x; "
                     f"WER {100 * f['wer']:.2f} "
                     f"({ratios[f'deploy_{form}_wer_delta_pts']:+.2f} pt), S/D/I {f['sub']}/{f['del']}/{f['ins']}; "
                     f"{same}/{f['n']} hyps identical)", target))


# --- driver -----------------------------------------------------------------------------------------
def run_worker(name: str, argv: list[str]) -> dict:
    """One section in its own process; a failing section is reported as {"error": ...}, and the others
    still run (on a machine lent for minutes, one broken section must not cost the rest)."""
    cmd = [sys.executable, __file__, "--worker", name, *argv]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lorakit-bench-") as tmp:  # the worker's caches (GBs), removed after
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TMPDIR": tmp})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        return {"error": f"bench worker {name} failed (exit {proc.returncode})", "stderr_tail": proc.stderr[-4000:],
                "wall_seconds": time.perf_counter() - start}
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_seconds"] = time.perf_counter() - start
    return result


def _train_rows(r: dict, args, rows: list, ratios: dict) -> None:
    hf = r["train-hf"]["passes"][0]["utt_per_s"]
    lk_cold, lk_warm = (p["utt_per_s"] for p in r["train-lorakit"]["passes"])
    ratios["train_lorakit_cold_vs_hf"] = lk_cold / hf
    ratios["train_lorakit_warm_vs_hf"] = lk_warm / hf
    rows += [
        ("train: HF Seq2SeqTrainer + peft (utt/s)", f"{hf:.2f}", ""),
        ("train: lorakit, encoder cache cold (utt/s)", f"{lk_cold:.2f}  ({ratios['train_lorakit_cold_vs_hf']:.2f}x HF)", ">= 1.2x"),
        ("train: lorakit, encoder cache warm (utt/s)", f"{lk_warm:.2f}  ({ratios['train_lorakit_warm_vs_hf']:.2f}x HF)", ">= 1.2x"),
    ]
    if "train-nocache" in r:
        nocache = r["train-nocache"]["passes"][0]["utt_per_s"]
        ratios["train_nocache_vs_hf"] = nocache / hf
        la, lb = r["train-lorakit"]["losses"][: args.steps], r["train-nocache"]["losses"]
        ratios["frozen_vs_nocache_max_rel_loss_diff"] = max(abs(a - b) / abs(b) for a, b in zip(la, lb))
        rows += [("train: lorakit, encoder cache off (utt/s)", f"{nocache:.2f}  ({ratios['train_nocache_vs_hf']:.2f}x HF)", "(same work as HF)"),
                 ("loss curve, cache on vs off (max rel. diff)", f"{ratios['frozen_vs_nocache_max_rel_loss_diff']:.1e}", "<= 1e-4")]
    if "train-full" in r:
        full = r["train-full"]["passes"][0]["utt_per_s"]
        ratios["frozen_warm_vs_full_lora"] = lk_warm / full
        ratios["frozen_cold_vs_full_lora"] = lk_cold / full
        rows += [("train: lorakit, full LoRA enc+dec (utt/s)", f"{full:.2f}", ""),
                 ("frozen-encoder vs full LoRA, warm / cold",
                  f"{ratios['frozen_warm_vs_full_lora']:.1f}x / {ratios['frozen_cold_vs_full_lora']:.1f}x", ">= 5x")]


def _eval_rows(r: dict, rows: list, ratios: dict) -> None:
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


def summarize(r: dict, args) -> tuple[list[tuple[str, str, str]], dict]:
    """(measurement, value, target) rows and the ratios, for whichever sections succeeded."""
    rows, ratios = [], {}
    ok = {name: res for name, res in r.items() if "error" not in res}
    if {"train-hf", "train-lorakit"} <= set(ok):
        _train_rows(ok, args, rows, ratios)
    if {"eval-batch1", "eval-lorakit"} <= set(ok):
        _eval_rows(ok, rows, ratios)
    if "deploy-unmerged" in ok:
        _deploy_rows(ok, rows, ratios)
    if "baseline-cache" in ok:
        bc = ok["baseline-cache"]
        rows.append(("baseline: miss / hit (s)", f"{bc['miss_seconds']:.1f} / {bc['hit_seconds']:.3f}", "hit ~ 0 s"))
        rows.append(("baseline: changed key misses", ", ".join(f"{k} {'miss' if v else 'HIT (wrong)'}" for k, v in bc["changed_key_misses"].items()), "all miss"))
    for name in ("train-hf", "train-lorakit", "train-nocache", "train-full", "eval-batch1", "eval-lorakit"):
        if name in ok:
            rows.append((f"peak RSS {name} (MB)", f"{ok[name]['peak_rss_mb']:.0f}", "<= 3000 (batch 8)" if name.startswith("train") else ""))
        if ok.get(name, {}).get("peak_gpu_mb") is not None:
            rows.append((f"peak GPU memory {name} (MB, torch allocated)", f"{ok[name]['peak_gpu_mb']:.0f}", ""))
    rows += [(f"FAILED: {name}", res["error"], "") for name, res in r.items() if "error" in res]
    return rows, ratios


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported(),
                    gpu_memory_mb=torch.cuda.get_device_properties(0).total_memory / 2**20)
    return info


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that every section works, figures mean nothing")
    p.add_argument("--model", default="bundled:whisper-tiny.en")
    p.add_argument("--train", default="data/demo/train.jsonl")
    p.add_argument("--domain", default="data/demo/domain.jsonl")
    p.add_argument("--train-n", type=int, default=None, help="training clips (default 64; quick 8)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per measured pass (default 16; quick 2)")
    p.add_argument("--batch-size", type=int, default=None, help="default 8; quick 4")
    p.add_argument("--eval-n", type=int, default=None, help="domain clips evaluated (default 160; quick 6; 0 = all)")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=128, help="generation limit per clip (as the run parameter)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--deploy", default="", metavar="RUN", help="measure the shipped forms of this run (id or folder) instead")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for the deploy sections, every form alike")
    p.add_argument("--only", default="", help="comma-separated sections (default: all); the others are kept from --out")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, full, small in (("train_n", 64, 8), ("steps", 16, 2), ("batch_size", 8, 4), ("eval_n", 160, 6)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    if args.quick:
        args.eval_batch_size = min(args.eval_batch_size, 4)
    return args


def report(results: dict, args) -> dict:
    """The JSON report, with the summary table printed (for whichever sections are there)."""
    out = {"machine": machine(), "settings": {k: v for k, v in vars(args).items() if k != "worker"}, "results": results,
           "date": time.strftime("%Y-%m-%d %H:%M")}
    rows, out["ratios"] = summarize(results, args)
    if rows:
        width = max(len(r[0]) for r in rows)
        print("\n" + "\n".join(f"{a:<{width}}  {b}   {c}" for a, b, c in rows))
    if "error" not in results.get("profile", {"error": ""}):
        for label, table in results["profile"].items():
            if isinstance(table, list):
                print(f"\nprofile {label}:")
                for row in table[:8]:
                    print(f"  {row['share']:6.1%}  {row['ms']:9.1f} ms  {row['calls']:5d}x  {row['op']}  {row['shapes']}")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    if args.worker:
        result = globals()["worker_" + args.worker.replace("-", "_")](args)
        result["peak_rss_mb"] = _peak_rss_mb()
        result["peak_gpu_mb"] = _peak_gpu_mb()
        print("RESULT " + json.dumps(result))
        return 0

    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("quick", "only", "out", "worker")]
    sections = DEPLOY_WORKERS if args.deploy else WORKERS
    chosen = [w for w in sections if not args.only or w in args.only.split(",")]
    out = Path(args.out)
    results: dict = {}
    if (args.only or args.deploy) and out.exists():  # re-run some sections: keep the others from the last report
        results = json.loads(out.read_text()).get("results", {})
    for name in chosen:
        print(f"[bench] {name} ...", flush=True)
        results[name] = run_worker(name, forwarded)
        gpu = results[name].get("peak_gpu_mb")
        print(f"[bench] {name}: {results[name]['wall_seconds']:.0f} s wall, peak RSS {results[name].get('peak_rss_mb', 0):.0f} MB"
              + (f", peak GPU {gpu:.0f} MB" if gpu is not None else "") + (f", {results[name]['error']}" if "error" in results[name] else ""),
              flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report(results, args), indent=1))
    print(f"\n[bench] results written to {out}")
    return 1 if any("error" in results[name] for name in chosen) else 0


if __name__ == "__main__":
    sys.exit(main())
