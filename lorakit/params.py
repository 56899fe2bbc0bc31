"""The parameter language: how values from YAML files and papermill's `-p` become typed values
(`coerce`), comma-separated lists, `geometric:N` eval steps, and how a manifest parameter names its data
(a JSONL path, a `save_to_disk` folder, or `hf:<id>[:<split>]`). `config.RunConfig` is built from these;
this module knows no field but the data ones, and imports nothing from lorakit but `env`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .env import project_path, project_root


class ConfigError(ValueError):
    """A parameter is unknown, of the wrong type, or out of range. The message names it."""


HUB_PREFIX = "hf:"  # a manifest parameter naming a Hugging Face Hub dataset: hf:<id>[:<split>] (or hf:<id>:<config>:<split>)
SAVED_DATASET_FILES = ("state.json", "dataset_dict.json")  # what save_to_disk writes into a Dataset / DatasetDict folder
MANIFEST_FIELDS = ("train_manifest", "domain_manifest", "heldout_manifest", "replay_manifest", "domain_test_manifest",
                   "heldout_test_manifest", "real_manifest")


def is_hub_spec(value: str | os.PathLike) -> bool:
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in SAVED_DATASET_FILES)


REGEX_CHARACTERS = frozenset("*+?[](){}|^$\\")  # a target_modules value holding one of these is a regex


def is_regex(text: str) -> bool:
    return any(c in REGEX_CHARACTERS for c in text)


def regex_error(text: str) -> str | None:
    """Why `text`, a regex by `is_regex`, does not compile (re.error's message); None when it compiles or is no regex."""
    if not is_regex(text):
        return None
    try:
        re.compile(text)
    except re.error as exc:
        return str(exc)
    return None


INIT_LORA_WEIGHTS = (True, False, "gaussian", "orthogonal")  # peft inits that leave the base weights as they are
BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")  # peft rewrites W = W - BA at init ("pissa_niter_k" too)


def init_lora_problem(value: Any) -> str | None:
    """Why `init_lora_weights` = `value` is refused; None for an initialisation that leaves the base model as it is, so
    adapter_best/ reproduces the run on the original base (peft can convert PiSSA/OLoRA adapters on save,
    `path_initial_model_for_weight_conversion`; lorakit does not)."""
    known = ", ".join(map(repr, INIT_LORA_WEIGHTS))
    if isinstance(value, str) and value.lower().startswith(BASE_CHANGING_INITS):
        return ("this initialisation moves part of the base weights into the adapter (peft rewrites the base model in memory), so "
                f"adapter_best/ would not reproduce the run on the original model; lorakit refuses it. Use one of {known}")
    if value in INIT_LORA_WEIGHTS and (isinstance(value, bool) or value not in (0, 1)):
        return None
    return f"must be one of {known}"


LIST_FIELDS = ("adapter_scales", "eval_steps")  # comma-separated strings that also accept a number or a list


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = project_root() / p
    if not p.exists():
        raise ConfigError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter: value, got {type(data).__name__}")
    return data


ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")  # what a run id may hold


def load_launch_file(path: str | Path, known: set[str] | frozenset[str],
                     kind: str) -> tuple[dict[str, Any], str, str, dict[str, Any]]:
    """A sweep or search file (`kind`: "sweep" / "search"): its mapping, its name (the `name` key, else the file's
    stem), its `base` recipe ("" for none) and that recipe's values ({} for none), refusing unknown keys and a
    name that cannot prefix a run id, each in one line naming the file."""
    spec, where = load_yaml(path), str(path)
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown {kind} key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
    name = str(spec.get("name") or Path(path).stem)
    if not name or any(c not in ID_CHARS for c in name):
        raise ConfigError(f"{where}: name {name!r}: letters, digits, '-', '_' and '.' only (it prefixes run ids)")
    base = str(spec.get("base") or "")
    return spec, name, base, load_yaml(base) if base else {}


def geometric_steps(n: list[int], max_steps: int) -> list[int]:
    """`geometric:N`: N steps ending at max_steps, each (rounded) half the next: 150, N=5 -> 9, 19, 38, 75, 150.
    Denser at the start, where forgetting can happen within tens of steps at the default LR."""
    if len(n) != 1 or n[0] < 1:
        raise ConfigError(f"parameter 'eval_steps' = 'geometric:{','.join(map(str, n))}': expected geometric:N with N >= 1")
    steps = sorted({math.floor(max_steps / 2**k + 0.5) for k in range(n[0])} - {0})
    if len(steps) < n[0]:
        raise ConfigError(f"parameter 'eval_steps' = 'geometric:{n[0]}': halving from max_steps ({max_steps}) gives only "
                          f"{len(steps)} distinct steps; ask for at most that many")
    return steps


def eval_step_list(spec: str, interval: int, max_steps: int) -> list[int]:
    """`eval_steps` ("10,20,40" or "geometric:N") as steps, else every `interval`; always max_steps. Listed steps
    must ascend, each once, within [1, max_steps]: a ConfigError naming eval_steps otherwise."""
    text = spec.strip()
    if not text:
        steps = list(range(interval, max_steps + 1, interval))
    elif text.startswith("geometric:"):
        steps = geometric_steps(number_list(text.removeprefix("geometric:"), "eval_steps", int), max_steps)
    else:
        steps = number_list(text, "eval_steps", int)
        if steps != sorted(set(steps)):
            raise ConfigError(f"parameter 'eval_steps' = {spec!r}: must be ascending, each step once")
    if not all(1 <= s <= max_steps for s in steps):
        raise ConfigError(f"parameter 'eval_steps' = {spec!r}: steps must be between 1 and max_steps ({max_steps})")
    return sorted({*steps, max_steps})


def prompt_text(prompt: str) -> str:
    """A `prompt` parameter's text: itself, or for "@path" the file's non-empty lines joined by ", " (a terms list)."""
    if not prompt.startswith("@"):
        return prompt.strip()
    path = project_path(prompt[1:])
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise ConfigError(f"parameter 'prompt' = {prompt!r}: cannot read {path} ({exc.strerror or exc})") from None
    terms = [line for line in lines if line]
    if not terms:
        raise ConfigError(f"parameter 'prompt' = {prompt!r}: {path} holds no terms")
    return ", ".join(terms) + "."


def number_list(text: str, name: str, kind: type) -> list:
    """'1.0, 0.5' -> [1.0, 0.5]; a ConfigError naming `name` when an item is not a `kind`."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ConfigError(f"parameter {name!r} = {text!r}: expected comma-separated {kind.__name__}s") from None


def coerce(cls: type, name: str, value: Any, source: str) -> Any:
    """Accept what papermill and YAML produce (ints for floats, lists for target_modules); refuse the rest."""
    expected = cls.__dataclass_fields__[name].type
    bad = ConfigError(f"{source}: parameter {name!r} expects {expected}, got {value!r} ({type(value).__name__})")
    if name == "init_lora_weights":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, (bool, str)):
            return value
        raise bad
    if name in LIST_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # papermill's `-p adapter_scales 0.5` and YAML's `eval_steps: 50` are one-item lists
    if name in LIST_FIELDS and isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if name == "target_modules" and isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return ",".join(value)
        raise bad
    if expected == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if expected == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise bad
        return int(value)
    if expected == "float":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):  # YAML reads "5e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if expected == "str":
        if value is None:
            return ""
        if not isinstance(value, str):
            raise bad
        return value
    return value


def type_problem(kind: str, value: Any) -> str | None:
    """Why `value` does not fit a field annotated `kind` (what `coerce` made of a parameter, or a value given to RunConfig
    directly); None when it fits. Only float, int, bool and str are checked here: the other fields have rules of their own."""
    if kind == "float" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
        return "must be a finite number"
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        return "must be an integer"
    if kind == "bool" and not isinstance(value, bool):
        return "must be true or false"
    if kind == "str" and not isinstance(value, str):
        return "must be a string"
    return None


def check_inputs_exist(cfg: Any) -> None:
    """Missing manifest files (or dataset folders) are parameter errors too: raise before any model loads.
    A `hf:` dataset is checked when it is read (that may need the network)."""
    for name in MANIFEST_FIELDS:
        used = name != "replay_manifest" or cfg.replay_per_batch()
        p = cfg.path(name) if used and not is_hub_spec(getattr(cfg, name)) else None
        if p is not None and not p.exists():
            hint = ("; `lorakit demo-data` writes the general-English replay set the defaults use, or set replay_ratio 0"
                    if name == "replay_manifest" else "")
            raise ConfigError(f"parameter {name!r}: manifest file not found: {p}{hint}")
        if p is not None and p.is_dir() and not is_saved_dataset(p) and name != "replay_manifest":  # replay: a folder of audio too
            raise ConfigError(f"parameter {name!r}: {p} is a folder but not a dataset saved with save_to_disk "
                              f"(none of {', '.join(SAVED_DATASET_FILES)} in it); give a JSONL manifest or such a folder")
    if cfg.prompt:
        cfg.prompt_text()  # an unreadable or empty "@path" prompt fails here, before any model loads
