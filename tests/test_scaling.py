"""Guardrail-constrained adapter scaling: the (step, alpha) rule on hand-made numbers, the weights of a
scaled LoRA/DoRA adapter, the scale folded into adapter_best/ (read back by plain peft), and a run's record."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import cheap
from lorakit import RunConfig
from lorakit.config import ConfigError
from lorakit.experiment import scaling
from lorakit.experiment.evaluate import transcribe
from lorakit.experiment.features import Inputs
from lorakit.experiment.manifests import read_manifest
from lorakit.experiment.models import add_adapters, load_model
from lorakit.record import RunRecord

# the run: heldout baseline 6.5 %; every step breaks the 0.2-pt guardrail; scaled at step 50
EVALS = [
    {"step": 50, "domain_wer": 0.066, "heldout_wer": 0.178},
    {"step": 100, "domain_wer": 0.070, "heldout_wer": 0.143},
    {"step": 150, "domain_wer": 0.072, "heldout_wer": 0.132},
]
SCALED = [
    {"step": 50, "alpha": 0.75, "domain_wer": 0.066, "heldout_wer": 0.104},
    {"step": 50, "alpha": 0.5, "domain_wer": 0.074, "heldout_wer": 0.071},
    {"step": 50, "alpha": 0.25, "domain_wer": 0.193, "heldout_wer": 0.0662},  # +0.12 pt: within the guardrail
]


def test_the_scale_choice_honours_the_guardrail():
    chosen, ok = scaling.choose(EVALS, SCALED, heldout_baseline=0.065, guardrail_pts=0.2)
    assert (chosen["step"], chosen["alpha"], ok) == (50, 0.25, True)
    # a looser guardrail admits alpha 0.5 (+0.6 pt), which has the lower domain WER
    chosen, ok = scaling.choose(EVALS, SCALED, heldout_baseline=0.065, guardrail_pts=0.6)
    assert (chosen["alpha"], ok) == (0.5, True)
    # everything qualifies: alpha 0.75 ties alpha 1 at step 50 on domain WER, and the larger alpha wins
    chosen, ok = scaling.choose(EVALS, SCALED, heldout_baseline=0.065, guardrail_pts=20)
    assert (chosen["step"], chosen["alpha"], ok) == (50, 1.0, True)
    # nothing qualifies: the lowest domain WER overall, flagged; the tie again goes to alpha 1
    chosen, ok = scaling.choose(EVALS, SCALED, heldout_baseline=0.065, guardrail_pts=0.05)
    assert (chosen["step"], chosen["alpha"], ok) == (50, 1.0, False)
    # without scales the rule is select_best's
    chosen, ok = scaling.choose(EVALS, [], heldout_baseline=0.170, guardrail_pts=1.0)
    assert (chosen["step"], chosen["alpha"], ok) == (50, 1.0, True)
    # a tie between two scales goes to the larger one
    tied = [{**SCALED[1], "domain_wer": 0.07}, {**SCALED[2], "domain_wer": 0.07}]
    assert scaling.choose(EVALS, tied, 0.065, 1.0)[0]["alpha"] == 0.5


def test_scaling_curve_marks_the_chosen_point():
    chosen, _ = scaling.choose(EVALS, SCALED, 0.065, 0.2)
    curve = scaling.scaling_curve(EVALS[0], SCALED, chosen)
    assert [(p["alpha"], p["chosen"]) for p in curve] == [(1.0, False), (0.75, False), (0.5, False), (0.25, True)]
    assert curve[0]["heldout_wer"] == 0.178 and set(curve[0]) == {"alpha", "step", "domain_wer", "heldout_wer", "chosen"}


@pytest.mark.parametrize("value, scales", [("1.0", [1.0]), ("0.25,1.0,0.5", [1.0, 0.5, 0.25]), (0.5, [1.0, 0.5]),
                                           ([0.75, 0.5], [1.0, 0.75, 0.5]), (" 0.5 , ", [1.0, 0.5])])
def test_adapter_scales_parse(value, scales):
    assert RunConfig.from_dict({"adapter_scales": value}).scale_list() == scales


@pytest.mark.parametrize("value", ["0.5,x", "0", "1.5", "-0.5", "nan"])
def test_bad_adapter_scales_are_named(value):
    with pytest.raises(ConfigError, match="'adapter_scales'"):
        RunConfig.from_dict({"adapter_scales": value})


def _adapted(model_dir, use_dora: bool, seed: int = 1):
    """A tiny model with a LoRA/DoRA adapter whose weights are large enough to change what it says."""
    sm = load_model(model_dir)
    torch.manual_seed(seed)  # lora_A's init too: the test does not depend on the tests before it
    add_adapters(sm, RunConfig(lora_r=4, use_dora=use_dora, target_modules="decoder"))
    with torch.no_grad():
        for name, p in sm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
            elif "lora_magnitude_vector" in name:  # DoRA's output scale: a random tiny model's row norms say nothing
                p.mul_(torch.empty_like(p).uniform_(5.0, 50.0))
    return sm


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_scales_run_from_the_base_model_to_the_tuned_one(use_dora, whisper_dir, small_corpus):
    utts = read_manifest(small_corpus["domain"]).utterances[:4]
    base = load_model(str(whisper_dir))
    inputs = Inputs(base, 0.075, None, torch.device("cpu"))
    said_by_base = transcribe(base, utts, inputs, 4, 8)
    sm = _adapted(str(whisper_dir), use_dora)
    tuned = transcribe(sm, utts, inputs, 4, 8)
    assert tuned != said_by_base
    layers = scaling.adapter_layers(sm.model)
    before = {n: p.detach().clone() for n, p in sm.model.named_parameters() if "lora_" in n}
    scaling.set_scale(layers, 0.0)
    assert transcribe(sm, utts, inputs, 4, 8) == said_by_base  # alpha 0: the base model exactly
    scaling.set_scale(layers, 0.5)
    b = {n: p for n, p in sm.model.named_parameters() if "lora_B" in n}
    assert all(torch.equal(p, 0.5 * before[n]) for n, p in b.items())  # set from alpha 1, not compounded
    scaling.set_scale(layers, 1.0)
    assert all(torch.equal(p, before[n]) for n, p in sm.model.named_parameters() if "lora_" in n)
    assert transcribe(sm, utts, inputs, 4, 8) == tuned


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_the_folded_scale_reproduces_the_scaled_model_through_plain_peft(use_dora, whisper_dir, small_corpus, tmp_path):
    from peft import PeftModel

    utts = read_manifest(small_corpus["domain"]).utterances[:6]
    sm = _adapted(str(whisper_dir), use_dora)
    inputs = Inputs(sm, 0.075, None, torch.device("cpu"))
    unscaled = transcribe(sm, utts, inputs, 6, 8)
    layers = scaling.adapter_layers(sm.model)
    scaling.set_scale(layers, 0.5)
    scaled = transcribe(sm, utts, inputs, 6, 8)
    assert scaled != unscaled  # the test could not tell the two apart otherwise
    scaling.set_scale(layers, 1.0)
    record = RunRecord(tmp_path / "run")
    chosen = {"step": 7, "alpha": 0.5, "domain_wer": 0.3, "heldout_wer": 0.1}
    scaling.fold_into_best(sm, record, chosen, {"run_id": "fold"})
    assert json.loads((record.folder / "adapter_best" / "meta.json").read_text())["alpha"] == 0.5
    fresh = load_model(str(whisper_dir))
    fresh.model = PeftModel.from_pretrained(fresh.model, str(record.folder / "adapter_best"))
    assert transcribe(fresh, utts, inputs, 6, 8) == scaled
    assert transcribe(sm, utts, inputs, 6, 8) == unscaled  # the run's model is left unscaled
    # read back as a folded adapter (a resumed run), the unscaled weights are recovered
    again = scaling.adapter_layers(fresh.model, scaling.folded_alpha(record.folder / "adapter_best"))
    scaling.set_scale(again, 1.0)
    assert transcribe(fresh, utts, inputs, 6, 8) == unscaled


def test_a_run_with_adapter_scales_records_the_curve_and_folds_the_chosen_scale(tiny_cfg, monkeypatch):
    """The choice is forced to alpha 0.5 (the rule has its own test above): what a run does with it."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from lorakit.experiment.train import run

    real_choose = scaling.choose

    def choose_half(evals, scaled, *args):
        chosen, ok = real_choose(evals, scaled, *args)
        return next((s for s in scaled if s["alpha"] == 0.5), chosen), ok

    monkeypatch.setattr(scaling, "choose", choose_half)
    cfg = RunConfig(**cheap(tiny_cfg, run_id="scaled", adapter_scales="1.0,0.5,0.25", lr=2e-2, max_steps=2, eval_interval=2,
                            heldout_manifest=tiny_cfg["heldout_manifest"], max_new_tokens=8, verify_best=4))
    result = run(cfg)
    m, folder = result.metrics, result.folder
    assert m["best_alpha"] == 0.5 and m["best_step"] == 2
    assert [(p["alpha"], p["chosen"]) for p in m["adapter_scaling"]] == [(1.0, False), (0.5, True), (0.25, False)]
    history = [json.loads(x) for x in (folder / "history.jsonl").read_text().splitlines()]
    scaled_rows = [r for r in history if r["kind"] == "eval" and "alpha" in r]
    assert [(r["step"], r["alpha"], r["best"]) for r in scaled_rows] == [(2, 0.5, True), (2, 0.25, False)]
    assert [p["domain_wer"] for p in m["adapter_scaling"][1:]] == [r["domain_wer"] for r in scaled_rows]
    assert m["best_verified"] == {**m["best_verified"], "mode": "sample", "alpha": 0.5, "identical": 4}
    assert m["tuned_wer"] == scaled_rows[0]["domain_wer"] and m["heldout_tuned_wer"] == scaled_rows[0]["heldout_wer"]
    # adapter_best holds lora_B x 0.5 of the step-2 adapter (also checkpoint_last: the run's last step)
    best, last = load_file(folder / "adapter_best" / "adapter_model.safetensors"), load_file(folder / "checkpoint_last" / "adapter_model.safetensors")
    assert all(torch.equal(best[k], 0.5 * last[k] if "lora_B" in k else last[k]) for k in last)
    # plain peft reads it back and says what the run recorded as its best predictions
    sm = load_model(cfg.model)
    sm.model = PeftModel.from_pretrained(sm.model, str(folder / "adapter_best"))
    recorded = [json.loads(x) for x in (folder / "predictions" / "domain_best.jsonl").read_text().splitlines()]
    utts = {u.id: u for u in read_manifest(cfg.domain_manifest).utterances}
    hyps = transcribe(sm, [utts[r["id"]] for r in recorded], Inputs(sm, cfg.rms_target, None, torch.device("cpu")), 8, cfg.max_new_tokens)
    assert hyps == [r["hyp"] for r in recorded]
