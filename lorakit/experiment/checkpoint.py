"""Checkpoints: the best adapter (what gets reported) and the last training state (what resumes).

Each save writes a complete folder under a temporary name and renames it into place, so a crash
or a full disk mid-save leaves the previous checkpoint intact. Weights are safetensors; the
training state is loaded with `torch.load(weights_only=True)`, which refuses pickled objects.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..files import OLD_SUFFIX, atomic_folder

BEST = "adapter_best"
LAST = "checkpoint_last"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says which and why."""


def recover(folder: Path) -> None:
    """Finish or undo a swap that a crash interrupted between the two renames."""
    for name in (BEST, LAST):
        dst, old = folder / name, folder / (name + OLD_SUFFIX)
        if old.exists() and not dst.exists():
            os.replace(old, dst)
        elif old.exists():
            shutil.rmtree(old)
    for stale in folder.glob(".adapter_best.*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in folder.glob(".checkpoint_last.*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def _atomic_checkpoint(dst: Path) -> Iterator[Path]:
    """`files.atomic_folder`, with an OSError (e.g. a full disk) turned into a CheckpointError that
    says the previous checkpoint is intact."""
    try:
        with atomic_folder(dst) as tmp:
            yield tmp
    except OSError as exc:
        raise CheckpointError(f"could not save {dst} ({exc.strerror or exc}); the previous checkpoint is intact") from exc


def save_adapter(model, dst: Path, meta: dict[str, Any]) -> None:
    """peft `save_pretrained` (safetensors) + meta.json, atomically."""
    with _atomic_checkpoint(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))


def rng_state() -> dict[str, Any]:
    state = {
        "python": torch.tensor(_flatten_python_state(random.getstate()), dtype=torch.int64),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": torch.tensor(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _flatten_python_state(state) -> list[int]:
    version, internal, _gauss = state  # the cached gauss value is dropped: lorakit never draws it
    return [version, *internal, 0]


def set_rng_state(state: dict[str, Any]) -> None:
    flat = [int(x) for x in state["python"].tolist()]
    random.setstate((flat[0], tuple(flat[1:-1]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_training_state(model, optimizer, scheduler, step: int, dst: Path, meta: dict[str, Any]) -> None:
    """Adapter weights + optimizer/scheduler/RNG state + step, atomically."""
    with _atomic_checkpoint(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(), "step": step}, tmp / "training_state.pt")
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=2))


def load_adapter_weights(model, folder: Path) -> None:
    """Load adapter weights from a peft folder into the (already wrapped) model, safetensors only."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = folder / "adapter_model.safetensors"
    if not path.exists():
        raise CheckpointError(f"{folder}: no adapter_model.safetensors (lorakit loads safetensors only, never pickles)")
    set_peft_model_state_dict(model, load_file(str(path)))


def load_training_state(folder: Path) -> dict[str, Any]:
    path = folder / "training_state.pt"
    if not path.exists():
        raise CheckpointError(f"{folder}: no training_state.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, or a damaged file
        raise CheckpointError(
            f"{path}: refused to load ({type(exc).__name__}): training state must hold only tensors and plain values "
            "(torch.load weights_only=True); a file needing arbitrary unpickling is not trusted"
        ) from exc
