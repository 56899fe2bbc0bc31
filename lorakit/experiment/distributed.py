"""The accelerate details of a run, kept out of the training loop: the `Accelerator` (processes and
mixed precision), the record as a non-main process holds it, and evaluation sharded over processes.

One process on CPU or one GPU (plain `python`, papermill, a notebook) needs none of this to differ;
under `accelerate launch` / torchrun each process trains on its own slice of every batch, evaluates
its own slice of each eval set (hypotheses gathered, so every process scores the whole set and takes
the same decisions), and only the main process writes the run record and checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import RunConfig
from ..env import launch_world_size
from ..record import RunRecord
from .evaluate import EvalResult, decode_clips, evaluate, score, text_languages, warn_cut
from .features import Inputs
from .manifests import Utterance
from .models import SpeechModel, pick_autocast, pick_device


def make_accelerator(cfg: RunConfig):
    """The `accelerate.Accelerator` of a run. Mixed precision follows `cfg.precision` through
    `pick_autocast` (bf16 -> "bf16", fp16 -> "fp16" with a gradient scaler, fp32 -> "no"); placement
    stays ours (`device_placement=False`): the model is loaded straight onto the run's device."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    world = launch_world_size()
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


def broadcast(value, accelerator):
    """The main process's `value` on every process (itself when there is one process)."""
    if accelerator is None or accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


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
    hyps = decode_clips(sm, mine, inputs, cfg.eval_batch_size, cfg.max_new_tokens, desc, autocast) if mine else None
    gathered = gather_object([(u.id, h, hyps.cut.get(u.id)) for u, h in zip(mine, hyps.texts if hyps else [])])
    by_id = {uid: text for uid, text, _ in gathered}
    result = score(utts, [by_id[u.id] for u in utts], text_languages(sm, utts), {uid: n for uid, _, n in gathered if n is not None})
    if accelerator.is_main_process:
        warn_cut(result, desc, cfg.max_new_tokens)
    return result
