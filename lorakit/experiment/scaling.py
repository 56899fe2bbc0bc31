"""Guardrail-constrained adapter scaling: the best adapter's update times alpha, a point between the base
model (alpha 0) and the tuned one (alpha 1), as WiSE-FT interpolates weights after full fine-tuning.

A run that lowers domain WER but raises heldout WER past the guardrail often holds an acceptable model
at a smaller alpha. With `adapter_scales` (e.g. "1.0,0.75,0.5,0.25"), the best checkpoint is evaluated
at each alpha < 1 on the selection sets, the (step, alpha) with the lowest domain WER within the
guardrail is chosen by `select_best`'s rule (ties: the larger alpha), and the chosen alpha is folded
into the weights of `adapter_best/`, so plain `PeftModel.from_pretrained` loads the scaled model.

What a scale does to the weights (peft's LoRA scale s = lora_alpha / r):
- LoRA: W + s·B·A becomes W + alpha·s·B·A, i.e. lora_B <- alpha·lora_B.
- DoRA: W' = m · (W + s·B·A) / ||W + s·B·A|| (per output row). lora_B <- alpha·lora_B scales the
  direction update only and would keep the trained magnitude m, so lorakit also interpolates the
  magnitude, m <- ||W|| + alpha·(m - ||W||) (||W||: the base weight's row norms, DoRA's initial m).
  Then alpha 0 is the base model exactly and alpha 1 the tuned one, for DoRA as for LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..files import read_json
from ..record import RunRecord
from . import checkpoint as ckpt
from .best import evaluate_step, select_best
from .features import Inputs
from .models import SpeechModel
from .prepare import Splits


@dataclass
class ScaledLayer:
    """One adapted layer: its lora_B (and DoRA magnitude) parameters and their unscaled values."""

    lora_b: torch.nn.Parameter
    b: torch.Tensor  # lora_B weight at alpha 1
    magnitude: torch.nn.Parameter | None = None  # DoRA only
    m: torch.Tensor | None = None  # magnitude at alpha 1
    base_norm: torch.Tensor | None = None  # row norms of the frozen base weight: the magnitude at alpha 0


def adapter_layers(model: torch.nn.Module, folded_alpha: float = 1.0) -> list[ScaledLayer]:
    """Every adapted layer of a peft model, with its weights taken as alpha 1; when the loaded adapter
    already holds a folded scale (`folded_alpha`, from its meta.json), the unscaled values are recovered."""
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import transpose

    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if module.lora_embedding_B:
            raise NotImplementedError("adapter scaling handles linear layers only, not adapted embeddings")
        for name, lin in module.lora_B.items():
            layer = ScaledLayer(lin.weight, lin.weight.detach().clone() / folded_alpha)
            if name in module.lora_magnitude_vector:
                base = transpose(module.get_base_layer().weight, module.fan_in_fan_out).detach()
                layer.base_norm = torch.linalg.norm(base, dim=1).to(base.dtype)
                layer.magnitude = module.lora_magnitude_vector[name].weight
                m = layer.magnitude.detach().clone()
                layer.m = m if folded_alpha == 1 else layer.base_norm + (m - layer.base_norm) / folded_alpha
            layers.append(layer)
    if not layers:
        raise ValueError("no LoRA/DoRA layer found: nothing to scale")
    return layers


@torch.no_grad()
def set_scale(layers: list[ScaledLayer], alpha: float) -> None:
    """Put every layer at `alpha` times its update, in place (from the unscaled values, so calls do not compound)."""
    for layer in layers:
        layer.lora_b.copy_(layer.b * alpha if alpha != 1 else layer.b)
        if layer.magnitude is not None:
            layer.magnitude.copy_(layer.base_norm + alpha * (layer.m - layer.base_norm) if alpha != 1 else layer.m)


def folded_alpha(adapter: Path) -> float:
    """The scale already folded into a saved adapter (1.0 when none)."""
    meta = adapter / "meta.json"
    return float(read_json(meta).get("alpha", 1.0)) if meta.exists() else 1.0


def evaluate_scales(sm: SpeechModel, inputs: Inputs, splits: Splits, cfg: RunConfig, record: RunRecord, step: int,
                    autocast, accelerator=None) -> list[dict]:
    """The best adapter (step `step`, read from `adapter_best/` into the run's model) evaluated at each
    alpha < 1 of `adapter_scales` on the selection sets: eval rows with an "alpha" key, predictions
    under `<split>_step<step>_alpha<alpha>`. The model is left holding the unscaled best adapter."""
    alphas = [a for a in cfg.scale_list() if a < 1]
    if not alphas:
        return []
    best = record.folder / ckpt.BEST
    ckpt.load_adapter_weights(sm.model, best)
    layers = adapter_layers(sm.model, folded_alpha(best))
    rows = []
    for alpha in alphas:
        set_scale(layers, alpha)
        rows.append({**evaluate_step(sm, inputs, splits, cfg, step, record, autocast, accelerator, alpha=alpha), "alpha": alpha})
        print(f"step {step} x alpha {alpha:g}: domain WER {rows[-1]['domain_wer']:.4f}"
              + (f", heldout {rows[-1]['heldout_wer']:.4f}" if rows[-1]["heldout_wer"] is not None else ""))
    set_scale(layers, 1.0)
    return rows


def choose(evals: list[dict], scaled: list[dict], heldout_baseline: float | None, guardrail_pts: float) -> tuple[dict | None, bool]:
    """The chosen evaluation among the unscaled ones (alpha 1) and the scaled ones, by `select_best`'s
    rule (lowest domain WER within the guardrail; ties: the larger alpha, then the earlier step), and
    whether it honours the guardrail."""
    pool = [{**e, "alpha": e.get("alpha", 1.0)} for e in evals + scaled]
    best, qualified = select_best(pool, heldout_baseline, guardrail_pts)
    return (None if best is None else pool[best]), qualified


def scaling_curve(best_row: dict, scaled: list[dict], chosen: dict) -> list[dict]:
    """The alpha trade-off at the best step for metrics.json: alpha 1 then each scaled evaluation."""
    points = [{**best_row, "alpha": 1.0}, *scaled]
    return [{"alpha": p["alpha"], "step": p["step"], "domain_wer": p["domain_wer"], "heldout_wer": p["heldout_wer"],
             "chosen": p["step"] == chosen["step"] and p["alpha"] == chosen["alpha"]} for p in points]


def fold_into_best(sm: SpeechModel, record: RunRecord, chosen: dict, meta: dict) -> None:
    """Write `adapter_best/` with the chosen alpha folded into its weights (the run's model must hold the
    unscaled best adapter, as `evaluate_scales` leaves it); `meta.json` records the alpha."""
    layers = adapter_layers(sm.model)
    set_scale(layers, chosen["alpha"])
    ckpt.save_adapter(sm.model, record.folder / ckpt.BEST, {
        **meta, "step": chosen["step"], "alpha": chosen["alpha"], "domain_wer": chosen["domain_wer"],
        "heldout_wer": chosen["heldout_wer"],
        "scaled": "lora_B x alpha; DoRA magnitude ||W|| + alpha (m - ||W||) (lorakit.experiment.scaling)"})
    set_scale(layers, 1.0)
