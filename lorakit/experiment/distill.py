"""Self-distillation from the frozen base model: a KL term that holds the adapted model's token
distributions near the base model's on some clips of each training batch (the replay clips, or all).

    objective = CE + distill_weight x T^2 x KL(softmax(base / T) || softmax(adapted / T))

averaged over the label tokens of the distilled clips (padding, -100, left out). The base model is the
same peft model with its adapters disabled (peft's `disable_adapter()`), in eval mode (no dropout: the
distribution it decodes with), under `torch.no_grad()`: no second copy of the weights, and only the
distilled clips' rows make the extra forward pass. `train_step` calls `Distill.term` per micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import RunConfig
from .manifests import Utterance


@dataclass(frozen=True)
class Distill:
    """What one run distills: weight, temperature, on which clips, and the replay clips that `on="replay"` picks."""

    weight: float
    temperature: float
    on: str  # "replay" | "all"
    replay: frozenset[Utterance] = frozenset()

    @classmethod
    def from_config(cls, cfg: RunConfig, replay: list[Utterance]) -> "Distill | None":
        """The run's distillation, or None when `distill_weight` is 0 (off: train_step is as without it)."""
        if cfg.distill_weight == 0:
            return None
        return cls(cfg.distill_weight, cfg.distill_temperature, cfg.distill_on, frozenset(replay))

    @property
    def scale(self) -> float:
        """The KL's factor in the objective: weight x T^2 (Hinton et al.: the softened gradients scale as 1/T^2)."""
        return self.weight * self.temperature ** 2

    def rows(self, batch: list[Utterance]) -> list[int]:
        """Positions in `batch` of the clips distilled (replay clips are known by identity, not by position:
        under several processes each holds a strided slice of the batch)."""
        return [i for i, u in enumerate(batch) if self.on == "all" or u in self.replay]

    def tokens(self, batch: list[Utterance], labels: torch.Tensor) -> int:
        """Label tokens of `batch` the KL averages over."""
        rows = self.rows(batch)
        return int((labels[rows] != -100).sum()) if rows else 0

    def term(self, peft_model, batch: list[Utterance], model_in: dict, labels: torch.Tensor, logits: torch.Tensor,
             autocast: torch.dtype | None) -> torch.Tensor | None:
        """Mean KL (nats, at temperature T) over the distilled clips' label tokens, differentiable through the
        adapted model's `logits` (its forward on the whole batch); None when no clip of `batch` is distilled."""
        rows = self.rows(batch)
        if not rows:
            return None
        index = torch.tensor(rows, device=labels.device)
        sub_labels = labels[index]
        base = base_logits(peft_model, take_rows(model_in, index), sub_labels, autocast)
        return token_kl(logits[index], base, sub_labels != -100, self.temperature)


@torch.no_grad()
def base_logits(peft_model, model_in: dict, labels: torch.Tensor, autocast: torch.dtype | None) -> torch.Tensor:
    """The frozen base model's logits for the decoder inputs `labels` imply (shifted right, as for the loss):
    the peft model with its adapters disabled, in eval mode; its train/eval mode is restored after."""
    was_training = peft_model.training
    peft_model.eval()
    try:
        with peft_model.disable_adapter(), torch.autocast(labels.device.type, dtype=autocast, enabled=autocast is not None):
            return peft_model(**model_in, labels=labels).logits
    finally:
        peft_model.train(was_training)


def token_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) per masked position (batch x time logits), averaged
    over those positions; computed in fp32 (the logits may be bf16 under autocast)."""
    log_student = F.log_softmax(student[mask].float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher[mask].float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")


def take_rows(model_in: dict, index: torch.Tensor) -> dict:
    """The rows `index` of every batch tensor of a model input (features, attention mask, cached encoder outputs)."""
    return {k: tuple(x[index] for x in v) if isinstance(v, tuple) else v[index] for k, v in model_in.items()}
