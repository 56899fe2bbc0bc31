"""The best checkpoint: the evaluation of one step (`evaluate_step`), which evaluation is best
(`select_best`, a small pure rule), and the reported numbers, which come from that adapter reloaded
from disk (`reevaluate_best`)."""

from __future__ import annotations

from ..config import RunConfig
from ..files import read_jsonl
from ..record import RunRecord, delta_pts, within_guardrail
from . import checkpoint as ckpt
from .batches import subset
from .distributed import evaluate_all
from .evaluate import EvalResult
from .features import Inputs, make_inputs
from .models import SpeechModel, encoder_is_frozen, load_model
from .prepare import Splits


def prediction_tag(step: int, alpha: float = 1.0) -> str:
    """How an evaluation's predictions are named: `step000050`, or `step000050_alpha0.25` for a scaled adapter."""
    return f"step{step:06d}" + (f"_alpha{alpha:g}" if alpha != 1 else "")


def evaluate_step(sm: SpeechModel, inputs: Inputs, splits: Splits, cfg: RunConfig, step: int, record: RunRecord, autocast,
                  accelerator=None, alpha: float = 1.0) -> dict:
    """Every selection set evaluated with the model as it is; predictions written; the history row's WERs."""
    row: dict = {"kind": "eval", "step": step, "heldout_wer": None}
    for name, utts in splits.evals.items():
        res = evaluate_all(sm, utts, inputs, cfg, f"eval {name} @ {step}" + (f" x {alpha:g}" if alpha != 1 else ""), autocast, accelerator)
        record.write_predictions(name, prediction_tag(step, alpha), res.rows)
        row[f"{name}_wer"] = res.wer
    return row


def select_best(evals: list[dict], heldout_baseline: float | None, guardrail_pts: float) -> tuple[int | None, bool]:
    """Index of the best evaluation and whether it honours the guardrail.

    Best = lowest domain WER among evaluations whose heldout WER rose by at most `guardrail_pts`
    points over the baseline (`record.within_guardrail`: the comparison the verdict and the search use
    too); when none qualifies, the lowest domain WER overall (flagged False).
    Ties go to the larger adapter scale ("alpha", 1 when absent), then to the earlier step.
    """
    if not evals:
        return None, False

    qualified = [i for i, e in enumerate(evals) if within_guardrail(delta_pts(heldout_baseline, e.get("heldout_wer")), guardrail_pts)]
    pool = qualified or list(range(len(evals)))
    best = min(pool, key=lambda i: (evals[i]["domain_wer"], -evals[i].get("alpha", 1.0), evals[i]["step"]))
    return best, bool(qualified)


def reevaluate_best(cfg: RunConfig, splits: Splits, record: RunRecord, autocast, device, accelerator=None,
                    best_step: int | None = None, alpha: float = 1.0) -> tuple[dict[str, EvalResult], dict]:
    """Load the best adapter from disk onto a fresh copy of the model: the reported numbers come from
    that file, never from the in-memory weights of the last step.

    With `verify_best` = k > 0, a seeded sample of k domain clips is re-transcribed and must give,
    word for word, the hypotheses recorded when that step was evaluated (at adapter scale `alpha`, which
    `adapter_best/` then holds folded into its weights); then the step's evaluation
    is reported (it is the same weights, now shown to read back from disk identically) and saved as
    the `best` predictions. Any difference, or k = 0, re-evaluates every clip and reports that.
    Test sets (`splits.tests`) are evaluated here, once, from the reloaded adapter: the reported numbers.
    """
    from peft import PeftModel

    sm = load_model(cfg.model, device=device, language=cfg.language, task=cfg.task)
    sm.model = PeftModel.from_pretrained(sm.model, str(record.folder / ckpt.BEST), is_trainable=False)
    sm.model.to(device)
    sm.set_prompt(cfg.prompt_text() if cfg.prompt else "")  # decode as every evaluation of the run did
    inputs = make_inputs(sm, cfg, device, frozen_encoder=encoder_is_frozen(sm), autocast=autocast)
    out: dict[str, EvalResult] = {}
    check: dict = {"mode": "full"}
    if cfg.verify_best and best_step is not None:
        recorded = {name: read_jsonl(record.predictions / f"{name}_{prediction_tag(best_step, alpha)}.jsonl") for name in splits.evals}
        sample = subset(splits.evals["domain"], cfg.verify_best, cfg.seed)
        again = evaluate_all(sm, sample, inputs, cfg, "verify best", autocast, accelerator)
        before = {r["id"]: r["hyp"] for r in recorded["domain"]}
        differ = [r["id"] for r in again.rows if before.get(r["id"]) != r["hyp"]]
        check = {"mode": "sample", "step": best_step, "alpha": alpha, "utterances": len(sample), "identical": len(sample) - len(differ), "differ": differ[:10]}
        if not differ:
            out = {name: EvalResult(rows) for name, rows in recorded.items()}
        else:
            print(f"WARNING: the reloaded best adapter changed {len(differ)} of {len(sample)} sampled hypotheses "
                  f"(e.g. {differ[0]}); re-evaluating every clip from it")
            check["mode"] = "full after mismatch"
    if not out:
        out = {name: evaluate_all(sm, utts, inputs, cfg, f"best {name}", autocast, accelerator) for name, utts in splits.evals.items()}
    for name, utts in splits.tests.items():  # the reported numbers, when there are test sets: once, from this adapter
        out[name] = evaluate_all(sm, utts, inputs, cfg, f"best {name}", autocast, accelerator)
    for name, res in out.items():
        record.write_predictions(name, "best", res.rows)
    return out, check

