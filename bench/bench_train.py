"""Training throughput: lorakit's loop (train_step) against transformers' Seq2SeqTrainer + peft on the
same model, LoRA config, clips, batch, steps and LR. Sections:

  train-hf        HF Seq2SeqTrainer + peft, log-mel features precomputed with `datasets.map` (as in the
                  transformers speech-recognition example)
  train-lorakit   lorakit's loop, decoder-only LoRA: encoder cache cold (first epoch computes encoder
                  outputs), then the same number of steps warm
  train-nocache   lorakit's loop with the encoder cache off: the same work per step as train-hf
  train-full      lorakit's loop with LoRA on encoder and decoder (the encoder trains: nothing to cache)
  train-distill   lorakit's loop with replay (replay_ratio 0.25), encoder cache warm: seconds per step without
                  self-distillation, with it on the replay clips (distill_on replay) and on every clip (all),
                  in interleaved blocks over the same batches (one process: the ratios hold on a shared machine)

Ratios: train_lorakit_{cold,warm}_vs_hf, train_nocache_vs_hf, frozen_vs_nocache_max_rel_loss_diff,
frozen_{warm,cold}_vs_full_lora, distill_{replay,all}_vs_off (seconds per step).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import bench_shared as shared


def _lorakit_loop(args, target_modules: str, encoder_cache: bool, passes: int) -> dict:
    """`passes` runs of args.steps steps each, one model: pass 1 is cold (empty caches), later ones warm."""
    from lorakit.experiment.batches import train_batches
    from lorakit.experiment.features import Inputs
    from lorakit.experiment.models import add_adapters, load_model
    from lorakit.experiment.train import make_optimizer, seed_everything, train_step

    # every lorakit loop schedules two passes, so the cache-on and cache-off loss curves are comparable
    cfg = shared.run_config(args, target_modules=target_modules, encoder_cache=encoder_cache, max_steps=args.steps * 2)
    device, autocast = shared.device_and_autocast(cfg)
    seed_everything(cfg.seed)
    sm = load_model(cfg.model, device=device)
    add_adapters(sm, cfg)
    optimizer, scheduler = make_optimizer(sm.model, cfg)
    cache = Path(tempfile.mkdtemp(prefix="lorakit-bench-enc-")) if encoder_cache else None
    inputs = Inputs(sm, cfg.rms_target, cache, device)
    utts = shared.clips(args.train, args.train_n)
    plain = Inputs(sm, cfg.rms_target, None, device)  # the warm-up leaves the encoder cache cold
    shared.warm_up_step(sm.model, plain.features(utts[: cfg.batch_size]), plain.labels(utts[: cfg.batch_size]), device, autocast)
    batches = train_batches(utts, cfg.batch_size, cfg.seed)
    out: dict = {"losses": [], "passes": []}
    for _ in range(passes):
        shared.sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            out["losses"].append(train_step(sm, inputs, [next(batches)], optimizer, scheduler, cfg.max_grad_norm, autocast)["loss"])
        shared.sync(device)
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


def worker_train_distill(args) -> dict:
    """Seconds per step of one model, decoder LoRA, warm encoder cache, batches mixed with replay_ratio 0.25 replay
    clips: blocks of args.steps steps without distillation, distill_on replay and distill_on all (distill_weight 1,
    T 2), `rounds` times in turn; within a round every mode steps through the same batches."""
    from lorakit.experiment.batches import mixed_batches
    from lorakit.experiment.distill import Distill
    from lorakit.experiment.features import Inputs
    from lorakit.experiment.models import add_adapters, load_model
    from lorakit.experiment.train import make_optimizer, seed_everything, train_step

    rounds, modes = 2, ("off", "replay", "all")
    cfg = shared.run_config(args, replay_manifest=args.replay, replay_ratio=0.25, max_steps=args.steps * rounds * len(modes))
    device, autocast = shared.device_and_autocast(cfg)
    seed_everything(cfg.seed)
    sm = load_model(cfg.model, device=device)
    add_adapters(sm, cfg)
    optimizer, scheduler = make_optimizer(sm.model, cfg)
    inputs = Inputs(sm, cfg.rms_target, Path(tempfile.mkdtemp(prefix="lorakit-bench-enc-")), device)
    utts, replay = shared.clips(args.train, args.train_n), shared.clips(args.replay, args.train_n)
    n_replay = cfg.replay_per_batch()
    for i in range(0, len(utts + replay), cfg.batch_size):  # untimed: every clip's encoder output cached first
        inputs.encoder_hidden((utts + replay)[i : i + cfg.batch_size])
    first = next(mixed_batches(utts, replay, cfg.batch_size, n_replay, cfg.seed))
    shared.warm_up_step(sm.model, inputs.model_inputs(first), inputs.labels(first), device, autocast)
    distills = {m: None if m == "off" else Distill(1.0, 2.0, m, frozenset(replay)) for m in modes}
    out: dict = {"n_replay": n_replay, "batch_size": cfg.batch_size, "steps_per_block": args.steps, "rounds": rounds,
                 **{m: {"seconds": 0.0, "steps": 0, "distill_kl": []} for m in modes}}
    for k in range(rounds):
        for m in modes:
            batches = mixed_batches(utts, replay, cfg.batch_size, n_replay, cfg.seed, start=k * args.steps)
            shared.sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                row = train_step(sm, inputs, [next(batches)], optimizer, scheduler, cfg.max_grad_norm, autocast, distill=distills[m])
                out[m]["distill_kl"].append(row.get("distill_kl"))
            shared.sync(device)
            out[m]["seconds"] += time.perf_counter() - start
            out[m]["steps"] += args.steps
    for m in modes:
        out[m]["s_per_step"] = out[m]["seconds"] / out[m]["steps"]
    return out


def distill_rows(d: dict, rows: list, ratios: dict) -> None:
    """The train-distill rows: seconds per step by mode, and each distilled mode's ratio to no distillation."""
    off = d["off"]["s_per_step"]
    rows.append((f"train: replay {d['n_replay']}/{d['batch_size']}, no distillation (s/step)", f"{off:.3f}", ""))
    for m in ("replay", "all"):
        ratios[f"distill_{m}_vs_off"] = d[m]["s_per_step"] / off
        rows.append((f"train: + distill_on {m} (s/step)", f"{d[m]['s_per_step']:.3f}  ({ratios[f'distill_{m}_vs_off']:.2f}x)", ""))


def worker_train_hf(args) -> dict:
    """The usual alternative: transformers' Seq2SeqTrainer over a `datasets` dataset of precomputed
    log-mel features, peft LoRA on the same modules. lorakit supplies only the model loading (same
    weights) and `load_audio` (same RMS-normalized samples), so both train on identical inputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    from lorakit.experiment.audio import load_audio
    from lorakit.experiment.models import load_model, resolve_target_modules

    cfg = shared.run_config(args)
    device, autocast = shared.device_and_autocast(cfg)
    torch.manual_seed(cfg.seed)
    sm = load_model(cfg.model, device=device)
    fe = sm.processor.feature_extractor
    utts = shared.clips(args.train, args.train_n)

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
    shared.warm_up_step(model, {"input_features": first["input_features"].to(device)}, first["labels"].to(device), device, autocast)
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
            shared.sync(device)
            self.start = time.perf_counter()

        def on_train_end(self, *a, **k):
            shared.sync(device)
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    trainer = Seq2SeqTrainer(model=model, args=targs, train_dataset=ds, data_collator=collate, callbacks=[clock])
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"map_seconds": map_seconds, "data_path": data_path, "losses": losses,
            "passes": [{"seconds": clock.seconds, "utt_per_s": cfg.max_steps * cfg.batch_size / clock.seconds}]}


def train_rows(r: dict, args, rows: list, ratios: dict) -> None:
    """The training rows of the summary table and their ratios (needs train-hf and train-lorakit)."""
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


# the order they run in: train-hf first, as the README's table reads
WORKERS = {"train-hf": worker_train_hf, "train-lorakit": worker_train_lorakit, "train-nocache": worker_train_nocache,
           "train-full": worker_train_full, "train-distill": worker_train_distill}
