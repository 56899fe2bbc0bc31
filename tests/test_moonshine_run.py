"""Moonshine through the whole protocol, `run()`: baseline, training, evaluation, the best adapter reloaded
from disk, the record. The tiny random Moonshine for the mechanics; the converted Moonshine tiny (slow) for a
run that also learns."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import cheap
from lorakit import RunConfig
from lorakit.experiment.features import Inputs
from lorakit.experiment.manifests import read_manifest
from lorakit.experiment.models import load_model
from lorakit.experiment.train import run


def _check_record(result, evals_at: list[int]) -> dict:
    m = json.loads((result.folder / "metrics.json").read_text())
    assert m["status"] == "finished" and m["best_step"] in evals_at
    hist = [json.loads(x) for x in (result.folder / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in hist if r["kind"] == "eval"] == evals_at
    best = next(r for r in hist if r["kind"] == "eval" and r["step"] == m["best_step"])
    # the reported numbers are the reloaded adapter's: its sampled clips came back word for word
    assert m["best_verified"]["mode"] == "sample" and not m["best_verified"]["differ"]
    chosen_on = m.get("dev") or m  # split runs (test_split) choose on dev, report on test
    assert chosen_on["tuned_wer"] == pytest.approx(best["domain_wer"], abs=1e-12)
    for name in ("domain_baseline", "domain_best", "heldout_baseline", "heldout_best"):
        assert (result.folder / "predictions" / f"{name}.jsonl").read_text().strip(), name
    from peft import PeftModel

    PeftModel.from_pretrained(load_model(m["model"]).model, str(result.folder / "adapter_best"))
    return m


def test_a_padded_moonshine_batch_decodes_each_clip_as_if_it_were_alone(moonshine_dir, small_corpus):
    """Moonshine's GroupNorm averages over every frame of the padded batch, so a short clip's encoder output
    changes with its neighbours; lorakit decodes clips of unequal length one at a time, unpadded."""
    sm = load_model(str(moonshine_dir))
    utts = read_manifest(small_corpus["domain"]).utterances[:4]
    inputs = Inputs(sm, 0.075, None, torch.device("cpu"))
    batch = inputs.model_inputs(utts)
    alone = [inputs.model_inputs([u]) for u in utts]
    assert not bool(batch["attention_mask"].all())  # clips of unequal length: the batch is padded
    with torch.no_grad():
        encoder = sm.base.get_encoder()
        shortest = int(batch["attention_mask"].sum(-1).argmin())
        padded = encoder(batch["input_values"][shortest : shortest + 1]).last_hidden_state
        single = encoder(alone[shortest]["input_values"]).last_hidden_state
        assert (padded[:, : single.shape[1]] - single).abs().max() > 1e-3  # padding moves what the encoder hears
    together = sm.decode(sm.generate(batch, max_new_tokens=12))
    one_by_one = [sm.decode(sm.base.generate(**x, max_new_tokens=min(12, int(x["input_values"].shape[1] / 16000 * 6.5) + 8),
                                             num_beams=1, do_sample=False))[0] for x in alone]
    assert together == one_by_one


def test_tiny_moonshine_runs_the_whole_protocol(tiny_cfg, moonshine_dir):
    cfg = cheap(tiny_cfg, model=str(moonshine_dir), heldout_manifest=tiny_cfg["heldout_manifest"], target_modules="",
                max_steps=2, max_eval_utterances=4, verify_best=2)
    result = run(RunConfig(**cfg, run_id="moonshine-tiny-random"))
    m = _check_record(result, [1, 2])
    assert m["steps"] == 2 and m["baseline_wer"] is not None and m["heldout_baseline_wer"] is not None
    assert m["target_modules"] == 32  # both sides: 6 linear layers in each of 2 encoder layers, 10 in each of 2 decoder layers
    assert m["encoder_cache_hits"] == m["encoder_cache_misses"] == 0  # Moonshine takes any length: nothing to cache


@pytest.mark.slow
def test_bundled_moonshine_tiny_learns_the_domain_through_run(tiny_cfg, small_corpus):
    """The converted Moonshine tiny on the small synthesized corpus: it hears (baseline WER well under 1),
    four LoRA steps lower the domain WER, and the best adapter reloads word for word."""
    from lorakit.experiment.convert_ort_moonshine import BUNDLED_MOONSHINE

    cfg = {**tiny_cfg, "model": BUNDLED_MOONSHINE, "max_steps": 4, "eval_interval": 2, "batch_size": 4,
           "max_eval_utterances": 8, "max_new_tokens": 64, "verify_best": 4}
    result = run(RunConfig(**cfg, run_id="moonshine-tiny-real"))
    m = _check_record(result, [2, 4])
    print({k: m[k] for k in ("baseline_wer", "tuned_wer", "heldout_baseline_wer", "heldout_tuned_wer", "elapsed_s")})
    assert m["baseline_wer"] < 0.6 and m["heldout_baseline_wer"] < 0.4
    assert m["tuned_wer"] < m["baseline_wer"]
