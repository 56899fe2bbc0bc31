"""The best checkpoint: which evaluation it is (`select_best`, a small pure rule), and the reported
numbers, which come from that adapter reloaded from disk (`reevaluate_best`)."""

from __future__ import annotations

from ..config import RunConfig
from ..record import RunRecord, read_jsonl
from . import checkpoint as ckpt
from .batches import subset
from .distributed import evaluate_all
from .evaluate import EvalResult
from .inputs import make_inputs
from .models import encoder_is_frozen, load_model
from .prepare import Splits


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
    inputs = make_inputs(sm, cfg, device, frozen_encoder=encoder_is_frozen(sm), autocast=autocast)
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

