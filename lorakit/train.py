"""One experiment of the protocol: `run(cfg)`.

    manifests -> filter (starvation guard) -> leakage check -> model -> shared baseline
    -> adapters -> [train_step x eval_interval -> evaluate domain+heldout -> best/last checkpoints]
    -> reload the best adapter from disk -> verify it reproduces that step (or re-evaluate): the reported numbers.

The loop is on one screen; `train_step` is the whole of optimisation.

It runs under `accelerate`: one process on CPU or one GPU (as plain `python`, papermill or a notebook:
nothing changes), or one process per GPU under `accelerate launch` / torchrun (data-parallel). Then
each process trains on its own slice of every batch (gradients all-reduced once per step), evaluates
its own slice of each eval set (hypotheses gathered, so every process scores the whole set and takes
the same best/stop decisions), and only the main process writes the run record and checkpoints.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .audio import AudioError
from .config import ConfigError, RunConfig, check_inputs_exist, project_root
from .data import Inputs, subset, tensor_fingerprint, train_batches
from .evaluate import EvalResult, baseline_key, cached_baseline, evaluate, score, store_baseline, transcribe
from .manifests import Manifest, ManifestError, Utterance, check_leakage, filter_by_duration, read_manifest
from .models import SpeechModel, add_adapters, encoder_is_frozen, load_model, pick_autocast, pick_device, resolve_target_modules
from .records import RunRecord, default_command, git_sha, now, read_jsonl, today, versions, write_json


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA


def cache_root() -> Path:
    from .bundled import cache_root as root

    return root()


def make_inputs(sm: SpeechModel, cfg: RunConfig, device, frozen_encoder: bool) -> Inputs:
    """The run's `Inputs`: with the Whisper encoder frozen (and `encoder_cache` on), encoder outputs
    come from the disk cache keyed by that encoder and the preprocessing."""
    cached = sm.family == "whisper" and cfg.encoder_cache and frozen_encoder
    return Inputs(sm, cfg.rms_target, Inputs.cache_dir_for(cache_root(), sm, cfg.rms_target) if cached else None, device)


# --- processes (accelerate) ----------------------------------------------------------------------
def make_accelerator(cfg: RunConfig):
    """The `accelerate.Accelerator` of a run. Mixed precision follows `cfg.precision` through
    `pick_autocast` (bf16 -> "bf16", fp16 -> "fp16" with a gradient scaler, fp32 -> "no"); placement
    stays ours (`device_placement=False`): the model is loaded straight onto the run's device."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    if world == 1:
        # one process may run several experiments (a notebook kernel, the tests); accelerate keeps the
        # first one's precision in a singleton and refuses another, so each run starts afresh
        AcceleratorState._reset_state()
    device = pick_device(cfg.device)
    mixed = {None: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[pick_autocast(cfg.precision, device)]
    # cpu=True on a CPU-only machine too: accelerate forms a CPU (gloo) process group only when told so
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=mixed, device_placement=False)
    if accelerator.num_processes != world:
        raise RuntimeError(f"launched as {world} processes but accelerate set up {accelerator.num_processes}: "
                           "every process would write the same run record")
    return accelerator


class FollowerRecord(RunRecord):
    """The run record as a non-main process holds it: it reads the folder and writes nothing."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self._metrics: dict = {}

    def update_metrics(self, **values) -> dict:
        self._metrics.update(values)
        return dict(self._metrics)

    def append_history(self, row: dict) -> None:
        pass

    def truncate_history(self, step: int) -> None:
        pass

    def write_predictions(self, split: str, tag: str, rows: list[dict]) -> Path:
        return self.predictions / f"{split}_{tag}.jsonl"


def evaluate_all(sm: SpeechModel, utts: list[Utterance], inputs: Inputs, cfg: RunConfig, desc: str, autocast,
                 accelerator=None) -> EvalResult:
    """`evaluate` over every process: each transcribes utts[rank::N], the (id, hypothesis) pairs are
    gathered, and every process scores the whole set (so all of them take the same decisions)."""
    if accelerator is None or accelerator.num_processes == 1:
        return evaluate(sm, utts, inputs, cfg.eval_batch_size, cfg.max_new_tokens, desc=desc, autocast=autocast)
    from accelerate.utils import gather_object

    mine = utts[accelerator.process_index :: accelerator.num_processes]
    hyps = transcribe(sm, mine, inputs, cfg.eval_batch_size, cfg.max_new_tokens, desc, autocast) if mine else []
    by_id = dict(gather_object([(u.id, h) for u, h in zip(mine, hyps)]))
    return score(utts, [by_id[u.id] for u in utts])


# --- data ----------------------------------------------------------------------------------------
@dataclass
class Splits:
    train: list[Utterance]
    evals: dict[str, list[Utterance]]  # "domain" (primary) and, when given, "heldout"
    manifests: dict[str, Manifest]
    report: dict = field(default_factory=dict)  # counts for the run record
    warnings: list[str] = field(default_factory=list)


MIN_CLIP_SECONDS = 0.1  # no word fits in less; Moonshine's first convolution needs ~0.06 s of input
SILENCE_RMS = 1e-8  # linear amplitude: below it `rms_normalize` leaves a clip as it is (digital silence)
DURATION_TOLERANCE = 0.25  # seconds (or 10 % of the clip): manifests round durations; truncated copies lose more


def _clip_problem(u: Utterance, sampling_rate: int, rms_target: float) -> tuple[str, str] | None:
    """(field, problem) when a clip cannot be used as it is listed, else None."""
    from .audio import load_audio

    try:
        x = load_audio(u.audio_filepath, sampling_rate=sampling_rate, rms_target=rms_target)
    except AudioError as exc:
        return "audio_filepath", str(exc)
    seconds = x.size / sampling_rate
    if seconds < MIN_CLIP_SECONDS:
        return "audio_filepath", f"{u.audio_filepath}: too short ({seconds:.3f} s < {MIN_CLIP_SECONDS} s)"
    if float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) < SILENCE_RMS:
        # a transcript paired with silence teaches the model to hallucinate it
        return "audio_filepath", f"{u.audio_filepath}: silent audio (RMS < {SILENCE_RMS:g}) for the text {u.text!r}"
    if abs(seconds - u.duration) > max(DURATION_TOLERANCE, 0.1 * u.duration):
        # a truncated copy, or a wrong field that the duration filter trusted
        return "duration", f"says {u.duration:g} s but {u.audio_filepath} lasts {seconds:.2f} s (truncated file or wrong field)"
    return None


def _usable_audio(utts: list[Utterance], policy: str, sampling_rate: int, rms_target: float, skipped: list) -> list[Utterance]:
    """Decode every clip once up front, so a bad file fails (or is skipped) before training starts."""
    good = []
    for u in utts:
        problem = _clip_problem(u, sampling_rate, rms_target)
        if problem is None:
            good.append(u)
            continue
        name, reason = problem
        if policy == "error":
            raise AudioError(f"{u.manifest}:{u.line}: field '{name}': {reason}", u.audio_filepath)
        skipped.append({"manifest": u.manifest, "line": u.line, "field": name, "reason": reason})
    return good


def _fitting_labels(utts: list[Utterance], sm: SpeechModel | None, policy: str, skipped: list) -> list[Utterance]:
    """Training texts the decoder can take: Whisper refuses labels over `max_target_positions`
    tokens, which would otherwise stop the run at whichever step first draws that clip."""
    limit = getattr(sm.base.config, "max_target_positions", None) if sm is not None else None
    if not limit:
        return list(utts)
    good = []
    for u in utts:
        n = len(sm.label_ids(u.text))
        if n <= limit:
            good.append(u)
            continue
        err = ManifestError(u.manifest, u.line, "text", f"{n} tokens, over the model's limit of {limit} ({u.text[:40]!r}...)")
        if policy == "error":
            raise err
        skipped.append({"manifest": u.manifest, "line": u.line, "field": "text", "reason": err.reason})
    return good


def prepare_data(cfg: RunConfig, sampling_rate: int = 16_000, sm: SpeechModel | None = None) -> Splits:
    """Read, filter and check every manifest and clip before any training: bad input is an error
    naming file, line and field, or (on_bad_audio='skip') a skip counted in `report`. With `sm`,
    training texts are also checked against the model's label limit."""
    paths = {"train": cfg.path("train_manifest"), "domain": cfg.path("domain_manifest"), "heldout": cfg.path("heldout_manifest")}
    manifests = {name: read_manifest(p, on_bad=cfg.on_bad_audio) for name, p in paths.items() if p is not None}
    report: dict = {name: {"lines": len(m.utterances) + len(m.skipped), "bad_lines_skipped": len(m.skipped),
                           "bad_lines": [{"line": line, "reason": reason} for line, reason in m.skipped]}
                    for name, m in manifests.items()}
    warnings: list[str] = []
    for name, m in manifests.items():
        if m.skipped:
            warnings.append(f"{name}: skipped {len(m.skipped)} bad manifest line(s), e.g. line {m.skipped[0][0]}: {m.skipped[0][1]}")

    filtered = filter_by_duration(manifests["train"].utterances, max_seconds=cfg.max_seconds, min_keep=cfg.min_train_clips,
                                  min_keep_fraction=cfg.min_keep_fraction, what="train")
    print(f"train: {filtered.summary()}")
    report["train"].update(kept=len(filtered.kept), dropped_over_max_seconds=len(filtered.dropped), max_seconds=cfg.max_seconds)
    train = subset(filtered.kept, cfg.max_train_utterances, cfg.seed)
    if len(train) < len(filtered.kept):
        print(f"train: using a seeded subset of {len(train)} of {len(filtered.kept)} clips (max_train_utterances)")

    skipped_audio: list[dict] = []
    train = _usable_audio(train, cfg.on_bad_audio, sampling_rate, cfg.rms_target, skipped_audio)
    evals = {name: _usable_audio(subset(manifests[name].utterances, cfg.max_eval_utterances, cfg.seed), cfg.on_bad_audio,
                                 sampling_rate, cfg.rms_target, skipped_audio)
             for name in ("domain", "heldout") if name in manifests}
    skipped_text: list[dict] = []
    train = _fitting_labels(train, sm, cfg.on_bad_audio, skipped_text)
    report["train"]["used"] = len(train)
    for name, utts in evals.items():
        report[name]["used"] = len(utts)
        if not utts:  # a WER over nothing would read 0.0
            raise ManifestError(manifests[name].path, None, None, f"no usable clips in the {name} set "
                                f"({sum(s['manifest'] == manifests[name].path for s in skipped_audio)} bad clips skipped)")
    if skipped_audio:
        report["bad_audio_skipped"] = skipped_audio
        warnings.append(f"skipped {len(skipped_audio)} unusable clip(s) (on_bad_audio='skip'), e.g. line {skipped_audio[0]['line']} "
                        f"of {skipped_audio[0]['manifest']}: field '{skipped_audio[0]['field']}': {skipped_audio[0]['reason']}")
    if skipped_text:
        report["train"]["too_long_text_skipped"] = skipped_text
        warnings.append(f"train: skipped {len(skipped_text)} clip(s) whose text is too long for the model, e.g. line {skipped_text[0]['line']}")
    if len(train) < cfg.min_train_clips:
        raise ConfigError(f"only {len(train)} usable training clips remain (min_train_clips={cfg.min_train_clips}); refusing to train")
    if len(train) < cfg.batch_size:
        raise ConfigError(f"batch_size={cfg.batch_size} is larger than the {len(train)} usable training clips")

    leakage = check_leakage(train, evals)
    report["leakage"] = leakage.to_dict()
    if not leakage.is_clean:  # the summary starts with "LEAKAGE:" and has the counts; add what leaked
        examples = [f"{e['eval_id']} ~ {e['train_id']} ({e['kind']}: {e['text']!r})" for s in leakage.sets.values() for e in s.examples]
        warnings.append(f"{leakage.summary()}; e.g. {'; '.join(examples)}")
    for w in warnings:
        print("WARNING:", w)
    return Splits(train=train, evals=evals, manifests=manifests, report=report, warnings=warnings)


# --- optimisation --------------------------------------------------------------------------------
def make_optimizer(model: torch.nn.Module, cfg: RunConfig):
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    name = "constant_with_warmup" if cfg.scheduler == "constant" else cfg.scheduler
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=int(cfg.warmup_ratio * cfg.max_steps), num_training_steps=cfg.max_steps)
    return optimizer, scheduler


def train_step(sm: SpeechModel, inputs: Inputs, micro_batches: list[list[Utterance]], optimizer, scheduler,
               max_grad_norm: float, autocast: torch.dtype | None = None, accelerator=None, model=None) -> dict:
    """forward -> loss -> backward (accumulated over micro-batches) -> clip -> optimizer step -> schedule.

    Under accelerate, `model` is the prepared (data-parallel) model, the micro-batches are this
    process's slices, and gradients are all-reduced once, at the last micro-batch's backward.
    """
    model = model if model is not None else sm.model
    model.train()
    total = 0.0
    for i, batch in enumerate(micro_batches):
        model_in, labels = inputs.model_inputs(batch), inputs.labels(batch)
        accumulating = accelerator is not None and i < len(micro_batches) - 1
        with accelerator.no_sync(model) if accumulating else nullcontext():
            with torch.autocast(inputs.device.type, dtype=autocast, enabled=autocast is not None):
                loss = model(**model_in, labels=labels).loss / len(micro_batches)
            accelerator.backward(loss) if accelerator is not None else loss.backward()
        total += loss.item()
    if accelerator is not None and accelerator.num_processes > 1:
        total = accelerator.reduce(torch.tensor(total, device=accelerator.device), "mean").item()
    params = [p for p in sm.model.parameters() if p.requires_grad]
    clip = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
    grad_norm = float(clip(params, max_grad_norm))  # after unscaling, when fp16 has a gradient scaler
    lr = scheduler.get_last_lr()[0]
    out = {"loss": total, "grad_norm": grad_norm, "lr": lr}
    if math.isfinite(total) and math.isfinite(grad_norm):
        optimizer.step()
        scheduler.step()
    elif math.isfinite(total) and accelerator is not None and accelerator.scaler is not None:
        optimizer.step()  # fp16 overflow: the gradient scaler skips this update and lowers its scale
        out["overflow"] = True
    optimizer.zero_grad(set_to_none=True)
    return out


# --- checkpoint selection --------------------------------------------------------------------------
def select_best(evals: list[dict], heldout_baseline: float | None, guardrail_pts: float) -> tuple[int | None, bool]:
    """Index of the best evaluation and whether it honours the guardrail.

    Best = lowest domain WER among evaluations whose heldout WER rose by at most `guardrail_pts`
    points over the baseline; when none qualifies, the lowest domain WER overall (flagged False).
    """
    if not evals:
        return None, False

    def ok(e: dict) -> bool:
        return heldout_baseline is None or e.get("heldout_wer") is None or (e["heldout_wer"] - heldout_baseline) * 100 <= guardrail_pts + 1e-9

    qualified = [i for i, e in enumerate(evals) if ok(e)]
    pool = qualified or list(range(len(evals)))
    best = min(pool, key=lambda i: (evals[i]["domain_wer"], evals[i]["step"]))
    return best, bool(qualified)


# --- the run ------------------------------------------------------------------------------------
@dataclass
class RunResult:
    run_id: str
    folder: Path
    metrics: dict

    def _repr_markdown_(self) -> str:
        m = self.metrics
        keys = ["run_id", "status", "steps", "lr", "best_step", "stop_reason", "baseline_wer", "tuned_wer",
                "heldout_baseline_wer", "heldout_tuned_wer", "elapsed_s"]
        cells = [f"{m.get(k):.4f}" if isinstance(m.get(k), float) and k.endswith("wer") else str(m.get(k)) for k in keys]
        return "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n| " + " | ".join(cells) + " |\n"


def default_run_id(cfg: RunConfig) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + cfg.config_hash()


def run(cfg: RunConfig) -> RunResult:
    """Execute one experiment and write its run record. Resumes from `checkpoint_last` when the
    run folder holds an unfinished run with the same configuration."""
    if os.environ.get("LORAKIT_SMOKE") == "1":
        cfg = cfg.smoke()
        print("LORAKIT_SMOKE=1: smoke profile (a few steps on a few clips); unset it for the real experiment")
    check_inputs_exist(cfg)
    accelerator = make_accelerator(cfg)
    run_id = cfg.run_id or default_run_id(cfg)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        run_id = broadcast_object_list([run_id])[0]  # the timestamp of the main process names the run
    folder = cfg.path("output_dir") / run_id
    record = RunRecord(folder) if accelerator.is_main_process else FollowerRecord(folder)
    previous = record.metrics()
    if previous.get("status") == "finished":
        raise ConfigError(f"run {run_id!r} already finished in {folder}; choose another run_id (or `lorakit run --force`)")
    started = time.time()
    record.update_metrics(run_id=run_id, status="running", date=today(), started=now(), error=None)
    try:
        return _run(cfg, run_id, record, started, accelerator)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            record.update_metrics(status=status, error=f"{type(exc).__name__}: {exc}", elapsed_s=round(time.time() - started, 1),
                                  traceback=traceback.format_exc(limit=8))
        except OSError as write_error:  # e.g. the full disk that failed the run: raise the run's own error, not this one
            print(f"WARNING: could not record the failure in {record.metrics_path}: {write_error}", file=sys.stderr)
        raise


def _run(cfg: RunConfig, run_id: str, record: RunRecord, started: float, accelerator) -> RunResult:
    seed_everything(cfg.seed)
    main, n_proc = accelerator.is_main_process, accelerator.num_processes
    if n_proc > 1 and cfg.batch_size % n_proc:
        raise ConfigError(f"parameter 'batch_size' = {cfg.batch_size}: must be a multiple of the {n_proc} processes, "
                          "which each train on an equal slice of every batch")
    device = pick_device(cfg.device) if n_proc == 1 else accelerator.device
    autocast = pick_autocast(cfg.precision, device)
    sm = load_model(cfg.model, device=device)
    splits = prepare_data(cfg, sampling_rate=sm.sampling_rate, sm=sm)
    if main:
        write_json(record.folder / "config.json", {
            "config": {**cfg.to_dict(), "run_id": run_id}, "versions": versions(), "git_sha": git_sha(project_root()),
            "command": default_command(cfg.deltas()), "device": str(device), "autocast": str(autocast), "model_path": sm.path,
            "processes": n_proc,
            "manifests": {name: {"path": str(m.path), "sha256": m.sha256, "n_lines": splits.report[name]["lines"],
                                 "n_used": splits.report[name].get("used")} for name, m in splits.manifests.items()},
        })

    # frozen-encoder mode is decided by the targets, before the adapters exist, so the baseline can use it too
    targets = resolve_target_modules(sm.model, cfg.target_module_list())
    inputs = make_inputs(sm, cfg, device, frozen_encoder=all(".encoder." not in f".{t}" for t in targets))

    model_fp = tensor_fingerprint(sm.base)  # once: part of every eval set's baseline key
    baselines = {name: shared_baseline(sm, inputs, name, utts, splits.manifests[name].sha256, cfg, autocast, accelerator, model_fp)
                 for name, utts in splits.evals.items()}
    for name, res in baselines.items():
        record.write_predictions(name, "baseline", res.rows)
        print(f"baseline {name}: WER {res.wer:.4f} over {len(res.rows)} utterances")
    base_dom = baselines["domain"].wer
    base_held = baselines["heldout"].wer if "heldout" in baselines else None

    torch.manual_seed(cfg.seed)  # adapter init does not depend on whether the baseline was cached
    if cfg.gradient_checkpointing:  # non-reentrant: works when the layer inputs need no gradient (frozen base)
        if hasattr(sm.base, "activation_checkpointing_enable"):  # transformers >= 5 renamed it
            sm.base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            sm.base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    add_adapters(sm, cfg, targets)
    if inputs.cache_dir is not None and not encoder_is_frozen(sm):
        raise RuntimeError("internal: encoder cache enabled but the encoder has trainable parameters")
    n_train = sum(p.numel() for p in sm.model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in sm.model.parameters())
    print(f"adapters: {'DoRA' if cfg.use_dora else 'LoRA'} r={cfg.lora_r} on {len(targets)} modules; "
          f"{n_train:,} trainable of {n_all:,} parameters ({100 * n_train / n_all:.2f} %); encoder cache: {'on' if inputs.cache_dir is not None else 'off'}")
    optimizer, scheduler = make_optimizer(sm.model, cfg)

    # resume
    step, evals = 0, []
    last = record.folder / ckpt.LAST
    if main:
        ckpt.recover(record.folder)
    accelerator.wait_for_everyone()
    if last.exists():
        state = ckpt.load_training_state(last)
        ckpt.load_adapter_weights(sm.model, last)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        step = int(state["step"])
        record.truncate_history(step)
        evals = [r for r in record.history() if r.get("kind") == "eval" and r["step"] <= step]
        print(f"resuming from {last} at step {step}")
    model, optimizer = accelerator.prepare(sm.model, optimizer)  # sm.model stays the unwrapped peft model

    metrics = record.update_metrics(
        command=default_command(cfg.deltas()), dataset=cfg.train_manifest, manifest=cfg.domain_manifest,
        heldout_manifest=cfg.heldout_manifest or None, max_steps=cfg.max_steps, lr=cfg.lr, scheduler=cfg.scheduler,
        use_dora=cfg.use_dora, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, seed=cfg.seed, model=cfg.model, notes=cfg.notes,
        baseline_wer=base_dom, heldout_baseline_wer=base_held, data=splits.report, leakage=splits.report["leakage"],
        warnings=list(splits.warnings), target_modules=len(targets), trainable_params=n_train,
    )
    stop_reason = "max_steps"
    batches = train_batches(splits.train, cfg.batch_size, cfg.seed, start=step * cfg.grad_accum)
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not main)
    while step < cfg.max_steps:
        mine = [next(batches)[accelerator.process_index :: n_proc] for _ in range(cfg.grad_accum)]  # this process's slices
        out = train_step(sm, inputs, mine, optimizer, scheduler, cfg.max_grad_norm, autocast, accelerator, model)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{out['loss']:.3f}")
        if not math.isfinite(out["loss"]) or (not math.isfinite(out["grad_norm"]) and not out.get("overflow")):
            record.append_history({"kind": "train", "step": step, **out, "elapsed_s": round(time.time() - started, 1)})
            stop_reason = f"non-finite loss ({out['loss']}) at step {step}"
            break
        if step % cfg.log_interval == 0 or step == 1:
            record.append_history({"kind": "train", "step": step, **out, "elapsed_s": round(time.time() - started, 1)})
        if step % cfg.eval_interval == 0 or step == cfg.max_steps:
            row = evaluate_step(sm, inputs, splits, cfg, step, record, autocast, accelerator)
            evals.append(row)
            best, qualified = select_best(evals, base_held, cfg.guardrail)
            row["best"] = best == len(evals) - 1
            record.append_history({**row, "elapsed_s": round(time.time() - started, 1)})
            if row["best"] and main:
                ckpt.save_adapter(sm.model, record.folder / ckpt.BEST, {"step": step, "domain_wer": row["domain_wer"],
                                  "heldout_wer": row["heldout_wer"], "guardrail_ok": qualified, "run_id": run_id})
            if main:
                ckpt.save_training_state(sm.model, optimizer, scheduler, step, last, {"run_id": run_id})
            print(f"step {step}: domain WER {row['domain_wer']:.4f} (baseline {base_dom:.4f})"
                  + (f", heldout {row['heldout_wer']:.4f} (baseline {base_held:.4f})" if base_held is not None else "")
                  + ("  <- best" if row["best"] else ""))
            if cfg.wer_stop_threshold and row["domain_wer"] > base_dom * cfg.wer_stop_threshold:
                stop_reason = f"wer_stop_threshold: domain WER {row['domain_wer']:.4f} > {cfg.wer_stop_threshold} x baseline {base_dom:.4f}"
                break
    bar.close()

    best, qualified = select_best(evals, base_held, cfg.guardrail)
    warnings = list(metrics.get("warnings", []))
    if best is None:
        record.update_metrics(status="failed", steps=step, stop_reason=stop_reason, error="no evaluation happened before the run stopped",
                              elapsed_s=round(time.time() - started, 1))
        raise RuntimeError(f"run {run_id}: stopped ({stop_reason}) before any evaluation; no adapter to report")
    if not qualified and base_held is not None:
        warnings.append(f"no evaluation kept heldout regression within the guardrail ({cfg.guardrail} pts); "
                        "best_step falls back to the lowest domain WER")
    accelerator.wait_for_everyone()  # adapter_best/ is on disk for every process
    final, verified = reevaluate_best(cfg, splits, record, autocast, device, accelerator, evals[best]["step"])
    metrics = record.update_metrics(
        status="finished", steps=step, stop_reason=stop_reason, best_step=evals[best]["step"], guardrail_ok=qualified,
        tuned_wer=final["domain"].wer, heldout_tuned_wer=final["heldout"].wer if "heldout" in final else None,
        domain_sdi=final["domain"].summary(), heldout_sdi=final["heldout"].summary() if "heldout" in final else None,
        baseline_sdi=baselines["domain"].summary(), warnings=warnings, finished=now(),
        best_verified=verified, elapsed_s=round(time.time() - started, 1), encoder_cache_hits=inputs.encoder_hits, encoder_cache_misses=inputs.encoder_misses,
    )
    accelerator.wait_for_everyone()  # no process returns before the record is complete
    print(f"best step {metrics['best_step']}: domain WER {base_dom:.4f} -> {metrics['tuned_wer']:.4f}"
          + (f", heldout {base_held:.4f} -> {metrics['heldout_tuned_wer']:.4f}" if base_held is not None else "")
          + (f" ({ckpt.BEST}/ reloaded: {verified['identical']} of {verified['utterances']} re-transcribed clips identical)"
             if verified["mode"] == "sample" else f" (every clip re-evaluated from {ckpt.BEST}/)"))
    return RunResult(run_id=run_id, folder=record.folder, metrics=metrics)


def shared_baseline(sm: SpeechModel, inputs: Inputs, name: str, utts: list[Utterance], manifest_sha: str, cfg: RunConfig,
                    autocast, accelerator=None, model_fingerprint: str | None = None) -> EvalResult:
    """Step-0 WER, computed once per (model, manifest, preprocessing, generation) and shared by every run.

    Under several processes the main one looks in the cache for all (another run may store the
    entry between two processes' looks), they compute it together, and the main one stores it.
    """
    key = baseline_key(sm, manifest_sha, [u.id for u in utts], cfg.rms_target, cfg.max_new_tokens, model_fingerprint)
    cached = cached_baseline(cache_root(), key)
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        cached = broadcast_object_list([cached])[0]
    if cached is not None:
        print(f"baseline {name}: from the shared cache ({key})")
        return cached
    result = evaluate_all(sm, utts, inputs, cfg, f"baseline {name}", autocast, accelerator)
    if accelerator is None or accelerator.is_main_process:
        store_baseline(cache_root(), key, result)
    return result


def evaluate_step(sm, inputs, splits: Splits, cfg: RunConfig, step: int, record: RunRecord, autocast, accelerator=None) -> dict:
    row: dict = {"kind": "eval", "step": step, "heldout_wer": None}
    for name, utts in splits.evals.items():
        res = evaluate_all(sm, utts, inputs, cfg, f"eval {name} @ {step}", autocast, accelerator)
        record.write_predictions(name, f"step{step:06d}", res.rows)
        row[f"{name}_wer"] = res.wer
    return row


def reevaluate_best(cfg: RunConfig, splits: Splits, record: RunRecord, autocast, device, accelerator=None,
                    best_step: int | None = None) -> tuple[dict[str, EvalResult], dict]:
    """Load the best adapter from disk onto a fresh copy of the model: the reported numbers come from
    that file, never from the in-memory weights of the last step.

    With `verify_best` = k > 0, a seeded sample of k domain clips is re-transcribed and must give,
    word for word, the hypotheses recorded when that step was evaluated; then the step's evaluation
    is reported (it is the same weights, now shown to read back from disk identically) and saved as
    the `best` predictions. Any difference, or k = 0, re-evaluates every clip and reports that.
    """
    from peft import PeftModel

    sm = load_model(cfg.model, device=device)
    sm.model = PeftModel.from_pretrained(sm.model, str(record.folder / ckpt.BEST), is_trainable=False)
    sm.model.to(device)
    inputs = make_inputs(sm, cfg, device, frozen_encoder=encoder_is_frozen(sm))
    out: dict[str, EvalResult] = {}
    check: dict = {"mode": "full"}
    if cfg.verify_best and best_step is not None:
        recorded = {name: read_jsonl(record.predictions / f"{name}_step{best_step:06d}.jsonl") for name in splits.evals}
        sample = subset(splits.evals["domain"], cfg.verify_best, cfg.seed)
        again = evaluate_all(sm, sample, inputs, cfg, "verify best", autocast, accelerator)
        before = {r["id"]: r["hyp"] for r in recorded["domain"]}
        differ = [r["id"] for r in again.rows if before.get(r["id"]) != r["hyp"]]
        check = {"mode": "sample", "step": best_step, "utterances": len(sample), "identical": len(sample) - len(differ), "differ": differ[:10]}
        if not differ:
            out = {name: EvalResult(rows) for name, rows in recorded.items()}
        else:
            print(f"WARNING: the reloaded best adapter changed {len(differ)} of {len(sample)} sampled hypotheses "
                  f"(e.g. {differ[0]}); re-evaluating every clip from it")
            check["mode"] = "full after mismatch"
    if not out:
        out = {name: evaluate_all(sm, utts, inputs, cfg, f"best {name}", autocast, accelerator) for name, utts in splits.evals.items()}
    for name, res in out.items():
        record.write_predictions(name, "best", res.rows)
    return out, check
