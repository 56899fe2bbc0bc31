"""RunConfig: every parameter of an experiment, merged from defaults + per-run deltas and validated.

`params/default.yaml` holds every parameter; `params/<run>.yaml` holds only what differs; papermill's `-p key value`
and `-f file.yaml` override on top. Unknown keys and wrong types are errors that name the parameter, raised before any
model loads. How values are read is params.py's (the parameter language); comparing with a record is record.py's.
"""

from __future__ import annotations

import hashlib
import json
import math
import types
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .env import project_path, smoke_requested
from .params import (HUB_PREFIX, MANIFEST_FIELDS, ConfigError, coerce, eval_step_list, init_lora_problem, is_hub_spec, is_regex,  # noqa: F401
                     load_yaml, number_list, prompt_text, regex_error, type_problem)

SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
ON_BAD = ("error", "skip")
LABEL_CHECKS = ("off", "report", "skip")  # the base model's check of training labels: none, listed, listed and dropped
TRACKERS = ("none", "tensorboard", "mlflow", "wandb")  # accelerate's trackers a run can report to
TASKS = ("transcribe", "translate")  # Whisper's two tasks
CROSS_LANGUAGE_REPLAY = ("refuse", "own_token", "run_token")  # what replay clips in another language than the run's train under
DISTILL_ON = ("replay", "all")  # which clips of a training batch self-distillation from the frozen base model applies to


@dataclass(frozen=True)
class RunConfig:
    # what
    model: str = "bundled:whisper-tiny.en"  # bundled name, local HF directory, or hub id
    language: str = "en"  # spoken language, a Whisper code (en, fr, de...): a multilingual Whisper's prompt; English-only models take only en
    task: str = "transcribe"  # transcribe | translate (to English; multilingual Whisper only)
    run_id: str = ""  # empty: timestamp + config hash
    notes: str = ""  # free text for the run matrix
    # data
    train_manifest: str = "data/demo/train.jsonl"  # JSONL (audio_filepath, text[, duration, speaker_id]), save_to_disk folder, or hf:<id>[:<split>]
    domain_manifest: str = "data/demo/domain.jsonl"  # primary evaluation
    heldout_manifest: str = "data/demo/heldout.jsonl"  # safety guardrail; empty to skip
    domain_test_manifest: str = ""  # with it, domain_manifest is the dev set that chooses; this one reports
    heldout_test_manifest: str = ""  # the same for heldout (needs heldout_manifest)
    test_split: float = 0.5  # eval set without a test manifest: this share of its clips (speaker-disjoint) reports, the rest chooses; 0: off (provisional)
    real_manifest: str = ""  # real recordings (e.g. data/real/real.jsonl), evaluated for baseline and best adapter only: a sanity figure
    replay_manifest: str = "data/demo/replay.jsonl"  # general speech mixed into every training batch (lorakit demo-data writes this one)
    replay_ratio: float = 0.25  # fraction of each training batch drawn from replay_manifest: round(ratio x batch_size) clips; 0: off
    replay_language: str = "en"  # spoken language of replay_manifest's clips whose row names none (the bundled replay set is English)
    cross_language_replay: str = "refuse"  # replay clips in another language: refuse | own_token (under their <|lang|>) | run_token (the run's: teaches answering in theirs)
    distill_weight: float = 0.0  # self-distillation from the frozen base model: loss = CE + weight x T^2 x KL(base || adapted) over the label tokens of distill_on's clips; 0: off
    distill_temperature: float = 2.0  # T: both token distributions are softened by it before the KL (T^2 keeps the term's gradients on the scale of T = 1)
    distill_on: str = "replay"  # replay (the replay clips of each batch) | all (every clip: domain clips too)
    audio_column: str = "audio"  # a manifest given as a Hugging Face dataset: its audio column (Audio, or file paths)
    text_column: str = "text"  # ... its transcript column
    speaker_column: str = ""  # ... its speaker column; empty: none (speaker-aware statistics then see one speaker per clip)
    language_column: str = ""  # ... its per-row language column (Whisper codes, e.g. Common Voice's locale); empty: the set's declared language
    max_seconds: float = 20.0  # duration filter for training clips
    min_train_clips: int = 32  # refuse to train with fewer clips after filtering
    min_keep_fraction: float = 0.5  # refuse to train when filtering drops more than half
    max_train_utterances: int = 0  # 0: all; else a seeded subset (fast demos)
    max_eval_utterances: int = 0  # 0: all; else a seeded subset of each eval set (smoke runs only)
    on_bad_audio: str = "error"  # error | skip (skips are counted in the run record)
    pseudo_label_min_logprob: float = -1.0  # replay without transcripts (audio folder, rows without text): base-model targets; under this mean token log-prob (nats): left out
    label_check: str = "off"  # off | report | skip: the base model transcribes the training clips; likely label errors are recorded (report) or dropped (skip)
    label_check_wer: float = 1.0  # base-model WER against a training label above this (or a label far too long/short for its clip): a likely label error
    rms_target: float = 0.075  # linear amplitude, every path
    # optimisation
    max_steps: int = 150  # optimizer steps
    eval_interval: int = 50  # steps between evaluations of domain + heldout
    eval_steps: str = ""  # evaluate at these steps instead: "10,20,40,80,150" or "geometric:N" (each at half the next); max_steps always
    lr: float = 1e-3  # peak learning rate (AdamW)
    scheduler: str = "linear"  # linear | cosine | constant (all with warmup)
    warmup_ratio: float = 0.1  # fraction of max_steps spent warming up
    batch_size: int = 8  # clips per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0  # gradient clipping
    weight_decay: float = 0.0  # AdamW weight decay on adapter weights
    seed: int = 42  # python, numpy, torch; data order; adapter init
    # adapters
    use_dora: bool = False  # DoRA (weight-decomposed LoRA) instead of LoRA
    init_lora_weights: Any = True  # True | False | "gaussian" | "orthogonal" (pissa, olora... refused: they change the base weights)
    lora_r: int = 16  # adapter rank
    lora_alpha: float = 32.0  # adapter scaling numerator: the scale is alpha over r
    lora_dropout: float = 0.05  # dropout on the adapter input
    target_modules: str = "decoder"  # "decoder" (frozen encoder, cached), "encoder", "" (both sides), names "q_proj,v_proj", or a regex
    # selection and stopping
    wer_stop_threshold: float = 0.0  # stop when domain WER > baseline x this; 0 disables
    guardrail: float = 0.2  # max heldout regression (WER points) for best-checkpoint selection
    verify_best: int = 64  # domain clips re-transcribed from the reloaded best adapter; 0: re-evaluate all
    adapter_scales: str = "1.0,0.75,0.5,0.25"  # also try the best adapter's update times each alpha in (0, 1]; "1.0": off
    # evaluation and compute
    eval_batch_size: int = 32  # clips per generation batch
    max_new_tokens: int = 128  # generation limit per clip
    prompt: str = ""  # Whisper text prompt (prompt_ids) at every evaluation, e.g. domain terms; "@path": a file's lines joined by ", "
    prompt_only: bool = False  # train nothing: the base model with `prompt` against the base model without (the free competitor's row)
    encoder_cache: bool = True  # reuse encoder outputs when the encoder is frozen (Whisper)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~1.5x slower steps
    log_interval: int = 10  # steps between training-loss lines in history.jsonl
    device: str = "auto"  # auto: cuda, then mps, then cpu
    precision: str = "auto"  # auto: bf16 on capable GPUs, else fp32
    output_dir: str = "executed"  # run records go to <output_dir>/<run_id>/
    report_to: str = "none"  # none | tensorboard | mlflow | wandb (offline): config, losses, LR, each evaluation's WERs, final metrics
    command: str = ""  # how the run was started (`lorakit run` fills it in); empty: the equivalent papermill command
    # search (`lorakit search` fills these in; a trial reports each evaluation's domain WER and stops when pruned)
    search_storage: str = ""  # Optuna storage URL of the study this run is a trial of; empty: not a trial
    search_study: str = ""  # the study's name in that storage
    search_trial: int = -1  # the trial's number in that study; -1: not a trial

    def __post_init__(self) -> None:
        _validate(self)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "parameters") -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown parameter(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        return cls(**{k: coerce(cls, k, v, source) for k, v in values.items()})

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> "RunConfig":
        """A notebook's globals: every plain value is a parameter, so a misspelt `-p` name is an error, not ignored. The smoke
        profile (LORAKIT_SMOKE=1, as `make test` runs the notebooks) is applied here: what the notebook shows is what runs."""
        values = {k: v for k, v in namespace.items()  # modules, functions and classes are no parameters
                  if not k.startswith("_") and k not in _IPYTHON_NAMES and not isinstance(v, types.ModuleType) and not callable(v)}
        cfg = cls.from_dict(values, source="notebook parameters")
        if smoke_requested():
            print("LORAKIT_SMOKE=1: smoke profile (a few steps on a few clips); unset it for the real experiment")
            cfg = cfg.smoke()
        return cfg

    @classmethod
    def from_files(cls, *paths: str | Path, overrides: dict[str, Any] | None = None) -> "RunConfig":
        """defaults (the dataclass, mirrored by params/default.yaml) + each YAML file + overrides."""
        values = {k: v for path in paths for k, v in load_yaml(path).items()}  # a later file overrides an earlier one
        values.update(overrides or {})
        return cls.from_dict(values, source=" + ".join(str(p) for p in paths) or "overrides")

    # --- derived ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def deltas(self) -> dict[str, Any]:
        """Only the parameters that differ from the defaults (what a recipe file holds)."""
        default = RunConfig()
        return {k: v for k, v in self.to_dict().items() if getattr(default, k) != v and k != "command"}

    def config_hash(self) -> str:
        """Short hash of everything that shapes the result (not the run id, notes or output folder)."""
        default = RunConfig()
        relevant = {k: v for k, v in self.to_dict().items()
                    if k not in NAMING_FIELDS and not (k in HASHED_ONLY_WHEN_SET and v == getattr(default, k))}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:8]

    def smoke(self) -> "RunConfig":
        """The smoke profile (LORAKIT_SMOKE=1): the same run, shrunk to seconds, for CI's notebook runs."""
        return replace(self, max_steps=min(self.max_steps, 4), eval_interval=min(self.eval_interval, 2), eval_steps="",
                       max_train_utterances=16, max_eval_utterances=12, min_train_clips=min(self.min_train_clips, 8),
                       batch_size=min(self.batch_size, 4), notes=(self.notes + " [smoke profile]").strip())

    def replay_per_batch(self) -> int:
        """Replay clips per training batch: round(replay_ratio x batch_size), halves up; 0: no replay (ratio 0 or no manifest)."""
        return math.floor(self.replay_ratio * self.batch_size + 0.5) if self.replay_ratio > 0 and self.replay_manifest else 0

    def eval_step_list(self) -> list[int]:
        """The steps that evaluate and checkpoint (`params.eval_step_list`); max_steps always, so no training is lost."""
        return eval_step_list(self.eval_steps, self.eval_interval, self.max_steps)

    def prompt_text(self) -> str:
        """`prompt`'s text (`params.prompt_text`: "@path" reads a file of terms)."""
        return prompt_text(self.prompt)

    def scale_list(self) -> list[float]:
        """`adapter_scales` as numbers, largest first; 1.0 (the adapter as trained) is always among them."""
        return sorted({1.0, *number_list(self.adapter_scales, "adapter_scales", float)}, reverse=True)

    def target_module_list(self) -> list[str]:
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]

    def target_module_spec(self) -> list[str] | str:
        """`target_modules` as peft takes it: a regex (full-matched) stays a string, else a list of names or name suffixes."""
        text = self.target_modules.strip()
        return text if is_regex(text) else self.target_module_list()

    def path(self, name: str) -> Path | None:
        """A manifest or folder parameter as an absolute path (relative ones resolve at the project root); None if empty."""
        value = getattr(self, name)
        return project_path(value) if value else None

    def input_spec(self, name: str) -> str | None:
        """A manifest parameter as the data reader takes it: `hf:<id>[:<split>]` as it is, else the absolute path."""
        value = getattr(self, name)
        return value if is_hub_spec(value) else (str(self.path(name)) if value else None)

    def columns(self) -> dict[str, str]:
        """The column choice for manifests given as Hugging Face datasets (`hf_datasets.read_input`'s keywords)."""
        return {name: getattr(self, name) for name in ("audio_column", "text_column", "speaker_column", "language_column")}


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
# THE fields that name, describe or place a run, or say where it reports (a search trial's identity too: a retried trial
# resumes its run): they shape no number. Seed and sweep groups, legends, config_hash and record.result_config read this.
NAMING_FIELDS = frozenset({"run_id", "notes", "output_dir", "command", "report_to", "search_storage", "search_study", "search_trial"})
# Added after run ids carried the config hash: left out of it while at their default, so a config that does not use
# them keeps the hash (the run id's suffix) it had before they existed.
HASHED_ONLY_WHEN_SET = frozenset({"distill_weight", "distill_temperature", "distill_on"})
# The plain range and choice checks, by field (the ones with a reason of their own are written out in _validate)
POSITIVE = ("lr", "max_seconds", "rms_target", "distill_temperature")
AT_LEAST_ONE = ("max_steps", "batch_size", "grad_accum", "eval_batch_size", "lora_r", "max_new_tokens", "log_interval")
FRACTIONS = ("warmup_ratio", "lora_dropout", "replay_ratio")
CHOICES = {"scheduler": SCHEDULERS, "precision": PRECISIONS, "on_bad_audio": ON_BAD, "label_check": LABEL_CHECKS, "task": TASKS,
           "cross_language_replay": CROSS_LANGUAGE_REPLAY, "distill_on": DISTILL_ON, "report_to": TRACKERS}


def _validate(cfg: RunConfig) -> None:
    def need(condition: bool, name: str, why: str) -> None:
        if not condition:
            raise ConfigError(f"parameter {name!r} = {getattr(cfg, name)!r}: {why}")

    _check_types(cfg, need)
    for name in POSITIVE:
        need(getattr(cfg, name) > 0, name, "must be > 0")
    for name in AT_LEAST_ONE:
        need(getattr(cfg, name) >= 1, name, "must be >= 1")
    for name in FRACTIONS:
        need(0 <= getattr(cfg, name) < 1, name, "must be in [0, 1)")
    for name, choices in CHOICES.items():
        need(getattr(cfg, name) in choices, name, f"must be one of {choices}")
    need(1 <= cfg.eval_interval and (cfg.eval_interval <= cfg.max_steps or bool(cfg.eval_steps.strip())), "eval_interval",
         f"must be between 1 and max_steps ({cfg.max_steps})")  # unused when eval_steps is given
    cfg.eval_step_list()  # refuses eval_steps out of order, repeated, or outside [1, max_steps]
    need(0 <= cfg.min_keep_fraction <= 1, "min_keep_fraction", "must be in [0, 1]")
    need(cfg.guardrail >= 0, "guardrail", "must be >= 0 (WER points)")
    need(0 <= cfg.test_split < 1, "test_split", "must be in [0, 1) (the share of an eval manifest's clips that reports; 0: off)")
    need(cfg.wer_stop_threshold == 0 or cfg.wer_stop_threshold >= 1, "wer_stop_threshold", "0 (off) or >= 1 (a ratio to the baseline)")
    bad_init = init_lora_problem(cfg.init_lora_weights)
    need(bad_init is None, "init_lora_weights", str(bad_init))
    need(cfg.device in DEVICES or cfg.device.startswith("cuda:"), "device", f"must be one of {DEVICES} or cuda:N")
    need(bool(cfg.model), "model", "must name a model")
    _check_data(cfg, need)
    need(cfg.label_check_wer > 0, "label_check_wer", "must be > 0 (a WER as a fraction: 1.0 is as many errors as label words)")
    need(cfg.pseudo_label_min_logprob <= 0, "pseudo_label_min_logprob", "must be <= 0 (a mean log-probability, in nats)")
    _check_distill(cfg, need)
    need(cfg.replay_ratio == 0 or not cfg.replay_manifest or 1 <= cfg.replay_per_batch() < cfg.batch_size, "replay_ratio",
         f"must leave at least one replay and one training clip in a batch of {cfg.batch_size} (round(ratio x batch_size)); "
         "with batches this small, set replay_ratio 0 (no replay) or a larger batch_size")
    need(not cfg.heldout_test_manifest or bool(cfg.heldout_manifest), "heldout_test_manifest",
         "needs a heldout_manifest (the dev set that checks the guardrail while choosing)")
    need(not cfg.prompt_only or bool(cfg.prompt), "prompt_only", "needs a prompt (the base model with the prompt is the row)")
    need(not cfg.prompt.startswith("@") or len(cfg.prompt) > 1, "prompt", "'@' must be followed by a file path")
    need(cfg.verify_best >= 0, "verify_best", "must be >= 0 (0: re-evaluate every clip)")
    need(all(0 < a <= 1 and math.isfinite(a) for a in cfg.scale_list()), "adapter_scales", "every scale must be in (0, 1]")
    bad_regex = regex_error(cfg.target_modules.strip())
    need(bad_regex is None, "target_modules", f"not a valid regular expression ({bad_regex})")
    _check_reporting(cfg, need)
    if cfg.run_id:
        need(all(c.isalnum() or c in "-_." for c in cfg.run_id), "run_id", "letters, digits, '-', '_' and '.' only")
    _check_language_task(cfg, need)


def _check_types(cfg: RunConfig, need) -> None:
    """Each field holds its annotation's type (`params.type_problem`): RunConfig(...) called directly skips `coerce`."""
    for f in fields(cfg):
        problem = type_problem(f.type, getattr(cfg, f.name))
        need(problem is None, f.name, str(problem))


def _check_data(cfg: RunConfig, need) -> None:
    """The manifest parameters (JSONL paths or Hugging Face datasets) and the dataset columns."""
    need(bool(cfg.train_manifest), "train_manifest", "must name a manifest")
    need(bool(cfg.domain_manifest), "domain_manifest", "must name a manifest")
    for name in MANIFEST_FIELDS:
        need(getattr(cfg, name).strip() != HUB_PREFIX, name, "hf: must be followed by a dataset id (hf:<id>[:<split>])")
    need(bool(cfg.audio_column.strip()), "audio_column", "must name a column")
    need(bool(cfg.text_column.strip()), "text_column", "must name a column")


def _check_distill(cfg: RunConfig, need) -> None:
    """Self-distillation from the frozen base model (`distill_*`); the replay checks come before it."""
    need(cfg.distill_weight >= 0, "distill_weight", "must be >= 0 (0: off)")
    need(cfg.distill_weight == 0 or cfg.distill_on == "all" or cfg.replay_per_batch() > 0, "distill_on",
         "'replay' distills on the replay clips, and this run has none (replay_ratio 0 or no replay_manifest); use distill_on all, or distill_weight 0")


def _check_reporting(cfg: RunConfig, need) -> None:
    """Where a run reports besides its record: a tracker (`report_to`), a search study (`search_*`)."""
    need(cfg.search_trial >= -1, "search_trial", "must be a trial number (>= 0), or -1 when the run is not a trial")
    trial = (bool(cfg.search_storage), bool(cfg.search_study), cfg.search_trial >= 0)
    need(all(trial) or not any(trial), "search_trial", "a trial needs all of search_storage, search_study and search_trial")


def _check_language_task(cfg: RunConfig, need) -> None:
    """The shape of `language` and `replay_language`; whether the model knows them is checked when it loads."""
    for name in ("language", "replay_language"):
        code = getattr(cfg, name)
        need(code.isascii() and code.isalpha() and code.islower(), name, "a language code in lower case, as Whisper writes it (en, fr, de, haw...)")
