"""One experiment of the protocol: `run(cfg)`.

    manifests -> filter (starvation guard) -> leakage check -> model -> shared baseline
    -> adapters -> [train_step x eval_interval (or to the next of eval_steps) -> evaluate domain+heldout -> best/last checkpoints]
    -> (adapter_scales) the best adapter at each scale alpha < 1; the (step, alpha) within the guardrail, folded
    -> reload the best adapter from disk -> verify it reproduces that step (or re-evaluate): the reported numbers.

`_run` reads as that list of named steps; `train_loop` is the loop, on one screen; `train_step` is
the whole of optimisation. Data preparation is `prepare.py`, the shared baseline `baseline.py`, the
best checkpoint `best.py`, its scaling `scaling.py`, and the accelerate details (processes, sharded evaluation) `distributed.py`.
"""

from __future__ import annotations

import math
import random
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, RunConfig
from ..params import check_inputs_exist
from ..display import progress_bar as tqdm, progress_to_kernel_terminal
from ..env import project_root
from ..files import write_json
from ..record import RunRecord, check_same_run, git_sha, now, run_command, today, versions
from ..scoring import normalizer_name
from ..display import format_wer, markdown_table
from . import checkpoint as ckpt
from .baseline import shared_baseline
from .batches import mixed_batches
from .distill import Distill
from . import scaling
from .best import evaluate_step, reevaluate_best, select_best
from .distributed import FollowerRecord, broadcast, evaluate_all, make_accelerator
from .evaluate import EvalResult
from .features import Inputs, make_inputs, tensor_fingerprint
from .manifests import Utterance
from .models import SpeechModel, TargetPlan, add_adapters, load_model, pick_autocast, pick_device, plan_targets
from .prepare import Splits, prepare_data
from . import pseudo_labels, trackers, trial


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA


# --- optimisation --------------------------------------------------------------------------------
def make_optimizer(model: torch.nn.Module, cfg: RunConfig):
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    name = "constant_with_warmup" if cfg.scheduler == "constant" else cfg.scheduler
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=int(cfg.warmup_ratio * cfg.max_steps), num_training_steps=cfg.max_steps)
    return optimizer, scheduler


def train_step(sm: SpeechModel, inputs: Inputs, micro_batches: list[list[Utterance]], optimizer, scheduler,
               max_grad_norm: float, autocast: torch.dtype | None = None, accelerator=None, model=None,
               distill: Distill | None = None) -> dict:
    """forward -> loss -> backward (accumulated over micro-batches) -> clip -> optimizer step -> schedule.

    Each micro-batch's mean token loss is weighted by its share of the step's label tokens, so the
    accumulated step equals one batch holding all the micro-batches (clips of unequal length alike).
    Under accelerate, `model` is the prepared (data-parallel) model, the micro-batches are this
    process's slices, and gradients are all-reduced once, at the last micro-batch's backward.
    With `distill`, the objective adds its scale x the KL to the frozen base model on its clips' tokens
    (weighted the same way); "loss" stays the CE (comparable with runs without it), "distill_kl" is the KL.
    """
    model = model if model is not None else sm.model
    model.train()
    total, kl_total = 0.0, 0.0
    labels = [inputs.labels(batch) for batch in micro_batches]
    counts = [int((x != -100).sum()) for x in labels]  # label tokens the loss averages over
    kl_counts = [distill.tokens(b, x) for b, x in zip(micro_batches, labels)] if distill is not None else []
    for i, batch in enumerate(micro_batches):
        model_in = inputs.model_inputs(batch)
        accumulating = accelerator is not None and i < len(micro_batches) - 1
        with accelerator.no_sync(model) if accumulating else nullcontext():
            with torch.autocast(inputs.device.type, dtype=autocast, enabled=autocast is not None):
                output = model(**model_in, labels=labels[i])
                loss = output.loss * (counts[i] / sum(counts))
            kl = (distill.term(sm.model, batch, model_in, labels[i], output.logits, autocast) * (kl_counts[i] / sum(kl_counts))
                  if kl_counts and kl_counts[i] else None)  # the base model's pass on this micro-batch's distilled clips
            objective = loss if kl is None else loss + distill.scale * kl
            accelerator.backward(objective) if accelerator is not None else objective.backward()
        total += loss.item()
        kl_total += kl.item() if kl is not None else 0.0
    if accelerator is not None and accelerator.num_processes > 1:
        total, kl_total = accelerator.reduce(torch.tensor([total, kl_total], device=accelerator.device), "mean").tolist()
    params = [p for p in sm.model.parameters() if p.requires_grad]
    clip = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
    grad_norm = float(clip(params, max_grad_norm))  # after unscaling, when fp16 has a gradient scaler
    lr = scheduler.get_last_lr()[0]
    out = {"loss": total, "grad_norm": grad_norm, "lr": lr, **({"distill_kl": kl_total} if distill is not None else {})}
    if math.isfinite(total) and math.isfinite(grad_norm):
        optimizer.step()
        scheduler.step()
    elif math.isfinite(total) and accelerator is not None and accelerator.scaler is not None:
        optimizer.step()  # fp16 overflow: the gradient scaler skips this update and lowers its scale
        out["overflow"] = True
    optimizer.zero_grad(set_to_none=True)
    return out


# --- the run ------------------------------------------------------------------------------------
@dataclass
class RunResult:
    run_id: str
    folder: Path
    metrics: dict

    def _repr_markdown_(self) -> str:
        m = self.metrics
        keys = ["run_id", "status", "steps", "lr", "best_step", "best_alpha", "stop_reason", "baseline_wer", "tuned_wer",
                "heldout_baseline_wer", "heldout_tuned_wer", "elapsed_s"]
        cells = {k: format_wer(m.get(k)) if isinstance(m.get(k), float) and k.endswith("wer") else str(m.get(k)) for k in keys}
        return markdown_table([cells], [(k, k) for k in keys]) + "\n"


def default_run_id(cfg: RunConfig) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + cfg.config_hash()


def run(cfg: RunConfig) -> RunResult:
    """Execute one experiment and write its run record. Resumes from `checkpoint_last` when the
    run folder holds an unfinished run with the same configuration; refuses, before anything loads,
    a run id recorded with another configuration (naming what changed)."""
    check_inputs_exist(cfg)
    accelerator = make_accelerator(cfg)
    run_id = broadcast(cfg.run_id or default_run_id(cfg), accelerator)  # the main process's timestamp names the run
    folder = cfg.path("output_dir") / run_id
    check_same_run(cfg, folder)
    record = trackers.run_record(folder, cfg, run_id) if accelerator.is_main_process else FollowerRecord(folder)  # + report_to
    previous = record.metrics()
    if previous.get("status") == "finished":
        raise ConfigError(f"run {run_id!r} already finished in {folder}; choose another run_id (or `lorakit run --force`)")
    started = time.time()
    record.update_metrics(run_id=run_id, status="running", date=today(), started=now(), error=None)
    try:  # plain papermill shows no cell output: the run's progress lines also go to the kernel's terminal
        with progress_to_kernel_terminal(enabled=accelerator.is_main_process):
            return _run(cfg, run_id, record, started, accelerator)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        try:
            record.update_metrics(status=status, error=f"{type(exc).__name__}: {exc}", elapsed_s=round(time.time() - started, 1),
                                  traceback=traceback.format_exc(limit=8))
        except OSError as write_error:  # e.g. the full disk that failed the run: raise the run's own error, not this one
            print(f"WARNING: could not record the failure in {record.metrics_path}: {write_error}", file=sys.stderr)
        raise


@dataclass
class RunState:
    """What the steps of one run share: set up once, then read by the loop and the finish."""

    cfg: RunConfig
    run_id: str
    record: RunRecord
    started: float
    accelerator: object
    device: torch.device
    autocast: torch.dtype | None
    sm: SpeechModel
    splits: Splits
    inputs: Inputs
    targets: TargetPlan
    baselines: dict[str, EvalResult] = field(default_factory=dict)
    optimizer: object = None
    scheduler: object = None
    n_trainable: int = 0

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def elapsed(self) -> float:
        return round(time.time() - self.started, 1)

    def baseline_wer(self, name: str) -> float | None:
        return self.baselines[name].wer if name in self.baselines else None


def _run(cfg: RunConfig, run_id: str, record: RunRecord, started: float, accelerator) -> RunResult:
    r = set_up(cfg, run_id, record, started, accelerator)
    r.baselines = compute_baselines(r)
    if cfg.prompt_only:
        return prompt_only(r)
    base_model_pass(r)
    add_run_adapters(r)
    step, evals = resume(r)
    model, r.optimizer = accelerator.prepare(r.sm.model, r.optimizer)  # r.sm.model stays the unwrapped peft model
    metrics = record_start(r)
    step, evals, stop_reason = train_loop(r, model, step, evals)
    return finish(r, step, evals, stop_reason, metrics)


def set_up(cfg: RunConfig, run_id: str, record: RunRecord, started: float, accelerator) -> RunState:
    """Seed, device, model, checked data, config.json; the adapter targets, matched by peft's own rule
    on the base model, decide frozen-encoder mode before the adapters exist, so the baseline can use
    the encoder cache too (`add_adapters` then checks that peft adapted exactly those modules)."""
    seed_everything(cfg.seed)
    n_proc = accelerator.num_processes
    if n_proc > 1 and cfg.batch_size % n_proc:
        raise ConfigError(f"parameter 'batch_size' = {cfg.batch_size}: must be a multiple of the {n_proc} processes, "
                          "which each train on an equal slice of every batch")
    device = pick_device(cfg.device) if n_proc == 1 else accelerator.device
    autocast = pick_autocast(cfg.precision, device)
    sm = load_model(cfg.model, device=device, language=cfg.language, task=cfg.task)
    prompt = sm.set_prompt(cfg.prompt_text()) if cfg.prompt and not cfg.prompt_only else {}  # prompt_only: after the baseline
    if prompt:
        record.update_metrics(prompt=prompt)
    targets = plan_targets(sm.model, cfg.target_module_spec())  # a target_modules that matches nothing fails here
    splits = prepare_data(cfg, sampling_rate=sm.sampling_rate, sm=sm)
    if accelerator.is_main_process:
        write_json(record.folder / "config.json", {
            "config": {**cfg.to_dict(), "run_id": run_id}, "versions": versions(), "git_sha": git_sha(project_root()),
            "command": run_command(cfg), "device": str(device), "autocast": str(autocast), "model_path": sm.path,
            "processes": n_proc,
            "manifests": {name: {"path": str(m.path), "sha256": m.sha256, "n_lines": splits.report[name]["lines"],
                                 "n_used": splits.report[name].get("used")} for name, m in splits.manifests.items()},
        })
    inputs = make_inputs(sm, cfg, device, frozen_encoder=targets.encoder_frozen, autocast=autocast)
    return RunState(cfg, run_id, record, started, accelerator, device, autocast, sm, splits, inputs, targets)


def compute_baselines(r: RunState) -> dict[str, EvalResult]:
    """Step-0 WER of every eval set (dev and test), from the shared cache or computed once; written to predictions/."""
    model_fp = tensor_fingerprint(r.sm.base)  # once: part of every eval set's baseline key
    baselines = {name: shared_baseline(r.sm, r.inputs, name, utts, r.splits.manifests[name].sha256, r.cfg, r.autocast,
                                       r.accelerator, model_fp)
                 for name, utts in {**r.splits.evals, **r.splits.tests}.items()}
    for name, res in baselines.items():
        r.record.write_predictions(name, "baseline", res.rows)
        print(f"baseline {name}: WER {res.wer:.4f} over {len(res.rows)} utterances")
    return baselines


def base_model_pass(r: RunState) -> None:
    """Before any adapter exists, the frozen base model transcribes (once; cached like the baseline) the
    training clips for the label check (`label_check`) and an unlabeled replay set for its pseudo-labels;
    both reports go into the record's data section, and a set too small afterwards stops the run here."""
    cfg, sp = r.cfg, r.splits
    unlabeled_replay = bool(sp.replay) and pseudo_labels.is_unlabeled(cfg.input_spec("replay_manifest"))
    if cfg.label_check == "off" and not unlabeled_replay:
        return
    model_fp = tensor_fingerprint(r.sm.base)
    passes = [("train", sp.train)] * (cfg.label_check != "off") + [("replay", sp.replay)] * unlabeled_replay
    for name, utts in passes:
        rows, cache = pseudo_labels.base_transcripts(r.sm, r.inputs, name, utts, sp.manifests[name].sha256, cfg, r.autocast,
                                                     r.accelerator, model_fp)
        if name == "train":
            sp.train, report = pseudo_labels.check_labels(utts, rows, cfg, r.sm.text_language)
            sp.report["train"].update(label_check={**report, **cache}, used=len(sp.train))
            if report["flagged"]:
                sp.warnings.append(f"train: {report['flagged']} likely label error(s) (label_check {cfg.label_check}: "
                                   f"{report['dropped']} dropped), e.g. {report['likely_label_errors'][0]['id']}: "
                                   + "; ".join(report["likely_label_errors"][0]["reasons"]))
        else:
            sp.replay, report = pseudo_labels.pseudo_labeled(utts, rows, cfg, r.sm.text_language)
            sp.report["replay"].update(pseudo_labels={**report, **cache}, used=len(sp.replay))
            print(f"replay: {report['kept']} of {report['clips']} clips pseudo-labelled by the base model, "
                  f"{report['left_out']} left out {report['left_out_by_reason']}")
    if len(sp.train) < cfg.min_train_clips:
        raise ConfigError(f"only {len(sp.train)} training clips remain after label_check skip (min_train_clips={cfg.min_train_clips})")
    if unlabeled_replay and len(sp.replay) < cfg.replay_per_batch():
        raise ConfigError(f"only {len(sp.replay)} replay clips of {cfg.replay_manifest} have a usable pseudo-label; "
                          f"replay_ratio={cfg.replay_ratio} takes {cfg.replay_per_batch()} per batch")


def add_run_adapters(r: RunState) -> None:
    """LoRA/DoRA on the resolved targets (seeded: the init does not depend on a cached baseline), and
    the optimizer over their weights."""
    cfg, sm = r.cfg, r.sm
    torch.manual_seed(cfg.seed)
    if cfg.gradient_checkpointing:  # non-reentrant: works when the layer inputs need no gradient (frozen base)
        if hasattr(sm.base, "activation_checkpointing_enable"):  # transformers >= 5 renamed it
            sm.base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            sm.base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    add_adapters(sm, cfg, r.targets)  # raises unless peft adapted exactly the planned modules
    r.n_trainable = sum(p.numel() for p in sm.model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in sm.model.parameters())
    print(f"adapters: {'DoRA' if cfg.use_dora else 'LoRA'} r={cfg.lora_r} on {len(r.targets.modules)} modules; "
          f"{r.n_trainable:,} trainable of {n_all:,} parameters ({100 * r.n_trainable / n_all:.2f} %); "
          f"encoder cache: {'on' if r.inputs.cache_dir is not None else 'off'}")
    r.optimizer, r.scheduler = make_optimizer(sm.model, cfg)


def resume(r: RunState) -> tuple[int, list[dict]]:
    """(step, evaluations so far): from `checkpoint_last` when the folder holds one, else (0, [])."""
    last = r.record.folder / ckpt.LAST
    if r.main:
        ckpt.recover(r.record.folder)
    r.accelerator.wait_for_everyone()
    if not last.exists():
        return 0, []
    state = ckpt.load_training_state(last)
    ckpt.load_adapter_weights(r.sm.model, last)
    r.optimizer.load_state_dict(state["optimizer"])
    r.scheduler.load_state_dict(state["scheduler"])
    ckpt.set_rng_state(state["rng"])
    step = int(state["step"])
    r.record.truncate_history(step)
    print(f"resuming from {last} at step {step}")
    return step, [row for row in r.record.history() if row.get("kind") == "eval" and row["step"] <= step and "alpha" not in row]


def record_start(r: RunState) -> dict:
    """The record's first fields. With test sets, `manifest`, `baseline_wer`... are the test sets' (what is
    reported) and `dev` holds the selection sets' numbers; `test_sets` maps each reported set to its file tag;
    `test_split` says how test sets were split off eval manifests without one; `guardrail` is the threshold
    selection used, which the analysis' verdict and a search's constraint read too."""
    cfg, rep = r.cfg, r.splits.reported
    return r.record.update_metrics(
        command=run_command(cfg), dataset=cfg.train_manifest, manifest=cfg.domain_test_manifest or cfg.domain_manifest,
        heldout_manifest=cfg.heldout_test_manifest or cfg.heldout_manifest or None, max_steps=cfg.max_steps, lr=cfg.lr,
        scheduler=cfg.scheduler, use_dora=cfg.use_dora, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, seed=cfg.seed, model=cfg.model,
        notes=cfg.notes, reported_on=r.splits.reported_on, test_split=r.splits.report["test_split"], guardrail=cfg.guardrail,
        real_baseline_wer=r.baseline_wer("real"),
        test_sets={name.removesuffix("_test"): name for name in r.splits.tests if name != "real"},
        dev=dev_numbers(r) if r.splits.has_test else None,
        baseline_wer=r.baseline_wer(rep("domain")), heldout_baseline_wer=r.baseline_wer(rep("heldout")), data=r.splits.report,
        leakage=r.splits.report["leakage"], warnings=list(r.splits.warnings), target_modules=len(r.targets.modules),
        trainable_params=r.n_trainable, normalizer=normalizer_name(r.sm.text_language),  # what every WER of the run is computed on
        distill=distill_record(r),
    )


def train_loop(r: RunState, model, step: int, evals: list[dict]) -> tuple[int, list[dict], str]:
    """train_step until max_steps; at each evaluation step (`eval_step_list`): evaluate, select, checkpoint, maybe stop."""
    cfg, n_proc = r.cfg, r.accelerator.num_processes
    batches = mixed_batches(r.splits.train, r.splits.replay, cfg.batch_size, cfg.replay_per_batch(), cfg.seed, start=step * cfg.grad_accum)
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not r.main)
    stop_reason = "max_steps"
    eval_at = set(cfg.eval_step_list())
    search = trial.connect(cfg, r.accelerator)  # a `lorakit search` trial reports every evaluation; else None
    distill = Distill.from_config(cfg, r.splits.replay)  # None unless distill_weight > 0
    while step < cfg.max_steps:
        mine = [next(batches)[r.accelerator.process_index :: n_proc] for _ in range(cfg.grad_accum)]  # this process's slices
        out = train_step(r.sm, r.inputs, mine, r.optimizer, r.scheduler, cfg.max_grad_norm, r.autocast, r.accelerator, model, distill)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{out['loss']:.3f}")
        if not math.isfinite(out["loss"]) or (not math.isfinite(out["grad_norm"]) and not out.get("overflow")):
            r.record.append_history({"kind": "train", "step": step, **out, "elapsed_s": r.elapsed()})
            stop_reason = f"non-finite loss ({out['loss']}) at step {step}"
            break
        if step % cfg.log_interval == 0 or step == 1:
            r.record.append_history({"kind": "train", "step": step, **out, "elapsed_s": r.elapsed()})
        if step in eval_at:
            row = evaluate_and_select(r, step, evals)
            base_dom = r.baseline_wer("domain")
            if cfg.wer_stop_threshold and row["domain_wer"] > base_dom * cfg.wer_stop_threshold:
                stop_reason = f"wer_stop_threshold: domain WER {row['domain_wer']:.4f} > {cfg.wer_stop_threshold} x baseline {base_dom:.4f}"
                break
            if search is not None and search.should_prune(step, row["domain_wer"]):
                stop_reason = "pruned"
                break
    bar.close()
    return step, evals, stop_reason


def evaluate_and_select(r: RunState, step: int, evals: list[dict]) -> dict:
    """Evaluate every set at `step`, append it to `evals`, save `adapter_best` when it is the best so
    far (within the guardrail) and `checkpoint_last` always."""
    cfg = r.cfg
    row = evaluate_step(r.sm, r.inputs, r.splits, cfg, step, r.record, r.autocast, r.accelerator)
    evals.append(row)
    best, qualified = select_best(evals, r.baseline_wer("heldout"), cfg.guardrail)
    row["best"] = best == len(evals) - 1
    r.record.append_history({**row, "elapsed_s": r.elapsed()})
    if row["best"] and r.main:
        ckpt.save_adapter(r.sm.model, r.record.folder / ckpt.BEST, {"step": step, "domain_wer": row["domain_wer"],
                          "heldout_wer": row["heldout_wer"], "guardrail_ok": qualified, "run_id": r.run_id})
    if r.main:
        ckpt.save_training_state(r.sm.model, r.optimizer, r.scheduler, step, r.record.folder / ckpt.LAST, {"run_id": r.run_id})
    base_dom, base_held = r.baseline_wer("domain"), r.baseline_wer("heldout")
    print(f"step {step}: domain WER {row['domain_wer']:.4f} (baseline {base_dom:.4f})"
          + (f", heldout {row['heldout_wer']:.4f} (baseline {base_held:.4f})" if base_held is not None else "")
          + ("  <- best" if row["best"] else ""))
    return row


def finish(r: RunState, step: int, evals: list[dict], stop_reason: str, metrics: dict) -> RunResult:
    """Choose the (step, adapter scale), reload that adapter, verify or re-evaluate it, and complete the record."""
    cfg, record = r.cfg, r.record
    base_held = r.baseline_wer("heldout")  # the dev set's, when there are test sets: selection runs on dev
    best, _ = select_best(evals, base_held, cfg.guardrail)
    warnings = list(metrics.get("warnings", []))
    if best is None:
        record.update_metrics(status="failed", steps=step, stop_reason=stop_reason, error="no evaluation happened before the run stopped",
                              elapsed_s=r.elapsed())
        raise RuntimeError(f"run {r.run_id}: stopped ({stop_reason}) before any evaluation; no adapter to report")
    r.accelerator.wait_for_everyone()  # adapter_best/ is on disk for every process
    chosen, qualified, curve = choose_scale(r, evals, evals[best])
    if not qualified and base_held is not None:
        warnings.append(f"no evaluation kept heldout regression within the guardrail ({cfg.guardrail} pts); "
                        "best_step falls back to the lowest domain WER")
    final, verified = reevaluate_best(cfg, r.splits, record, r.autocast, r.device, r.accelerator, chosen["step"], chosen["alpha"])
    dom, held = final[r.splits.reported("domain")], final.get(r.splits.reported("heldout"))
    metrics = record.update_metrics(
        status="finished", steps=step, stop_reason=stop_reason, best_step=chosen["step"], best_alpha=chosen["alpha"],
        adapter_scaling=curve, guardrail_ok=qualified, dev=dev_numbers(r, final) if r.splits.has_test else None,
        real_tuned_wer=final["real"].wer if "real" in final else None, real_sdi=final["real"].summary() if "real" in final else None,
        tuned_wer=dom.wer, heldout_tuned_wer=held.wer if held else None, domain_sdi=dom.summary(),
        heldout_sdi=held.summary() if held else None, baseline_sdi=r.baselines[r.splits.reported("domain")].summary(),
        warnings=warnings, finished=now(), best_verified=verified,
        elapsed_s=r.elapsed(), encoder_cache_hits=r.inputs.encoder_hits, encoder_cache_misses=r.inputs.encoder_misses,
        distill=distill_record(r),
    )
    r.accelerator.wait_for_everyone()  # no process returns before the record is complete
    base_dom, base_held = metrics["baseline_wer"], metrics["heldout_baseline_wer"]
    print(f"best step {metrics['best_step']}" + (f" x alpha {chosen['alpha']:g}" if chosen["alpha"] != 1 else "")
          + (" (chosen on the dev sets; test sets)" if r.splits.has_test else "")
          + f": domain WER {base_dom:.4f} -> {metrics['tuned_wer']:.4f}"
          + (f", heldout {base_held:.4f} -> {metrics['heldout_tuned_wer']:.4f}" if base_held is not None else "")
          + (f" ({ckpt.BEST}/ reloaded: {verified['identical']} of {verified['utterances']} re-transcribed clips identical)"
             if verified["mode"] == "sample" else f" (every clip re-evaluated from {ckpt.BEST}/)"))
    return RunResult(run_id=r.run_id, folder=record.folder, metrics=metrics)


def prompt_only(r: RunState) -> RunResult:
    """The free competitor: no training; the base model with `prompt` on the reported sets (test sets when given)
    is this run's "tuned" model, against the same base model without it (the baselines just computed)."""
    cfg, record, rep = r.cfg, r.record, r.splits.reported
    metrics = record_start(r)
    info = r.sm.set_prompt(cfg.prompt_text())
    sets = {**r.splits.evals, **r.splits.tests}
    out = {name: evaluate_all(r.sm, sets[name], r.inputs, cfg, f"prompted {name}", r.autocast, r.accelerator)
           for name in {rep("domain"), rep("heldout")} if name in sets}
    for name, res in out.items():
        record.write_predictions(name, "best", res.rows)
    dom, held = out[rep("domain")], out.get(rep("heldout"))
    metrics = record.update_metrics(
        status="finished", steps=0, stop_reason="prompt_only", best_step=0, best_alpha=None, prompt=info, guardrail_ok=None,
        tuned_wer=dom.wer, heldout_tuned_wer=held.wer if held else None, domain_sdi=dom.summary(),
        heldout_sdi=held.summary() if held else None, baseline_sdi=r.baselines[rep("domain")].summary(),
        warnings=list(metrics.get("warnings", [])), finished=now(), elapsed_s=r.elapsed())
    print(f"prompt only ({info['tokens']} prompt tokens): domain WER {metrics['baseline_wer']:.4f} -> {dom.wer:.4f}"
          + (f", heldout {metrics['heldout_baseline_wer']:.4f} -> {held.wer:.4f}" if held else ""))
    return RunResult(run_id=r.run_id, folder=record.folder, metrics=metrics)


def distill_record(r: RunState) -> dict | None:
    """The run's self-distillation (None when off): its parameters, and the KL (nats, at the temperature) of the
    first and last training rows history.jsonl logged, with their steps (read from the record: resumes included)."""
    cfg = r.cfg
    if cfg.distill_weight == 0:
        return None
    rows = [row for row in r.record.history() if row.get("kind") == "train" and "distill_kl" in row]
    return {"weight": cfg.distill_weight, "temperature": cfg.distill_temperature, "on": cfg.distill_on,
            "clips_per_batch": cfg.batch_size if cfg.distill_on == "all" else cfg.replay_per_batch(),
            "first": {"step": rows[0]["step"], "kl": rows[0]["distill_kl"]} if rows else None,
            "last": {"step": rows[-1]["step"], "kl": rows[-1]["distill_kl"]} if rows else None}


def dev_numbers(r: RunState, final: dict[str, EvalResult] | None = None) -> dict:
    """The selection (dev) sets' manifests and WERs: baseline, and the chosen adapter's once `final` is known."""
    out = {"manifest": r.cfg.domain_manifest, "heldout_manifest": r.cfg.heldout_manifest or None,
           "baseline_wer": r.baseline_wer("domain"), "heldout_baseline_wer": r.baseline_wer("heldout")}
    if final is not None:
        out.update(tuned_wer=final["domain"].wer, heldout_tuned_wer=final["heldout"].wer if "heldout" in final else None)
    return out


def choose_scale(r: RunState, evals: list[dict], best_row: dict) -> tuple[dict, bool, list[dict] | None]:
    """With `adapter_scales`: evaluate the best adapter at each alpha < 1, choose the (step, alpha) by
    the guardrail rule, record the trade-off in history.jsonl, and fold a chosen alpha < 1 into
    `adapter_best/`. Returns the chosen row, whether it honours the guardrail, and the alpha curve
    (None without scales)."""
    scaled = scaling.evaluate_scales(r.sm, r.inputs, r.splits, r.cfg, r.record, best_row["step"], r.autocast, r.accelerator)
    chosen, qualified = scaling.choose(evals, scaled, r.baseline_wer("heldout"), r.cfg.guardrail)
    if not scaled:
        return chosen, qualified, None
    for row in scaled:
        r.record.append_history({**row, "best": row["alpha"] == chosen["alpha"] and row["step"] == chosen["step"], "elapsed_s": r.elapsed()})
    if chosen["alpha"] != 1 and r.main:
        scaling.fold_into_best(r.sm, r.record, chosen, {"guardrail_ok": qualified, "run_id": r.run_id})
    r.accelerator.wait_for_everyone()  # the folded adapter_best/ is on disk for every process
    return chosen, qualified, scaling.scaling_curve(best_row, scaled, chosen)
