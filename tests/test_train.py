"""The experiment core on tiny random models and a small real corpus: mechanics, not accuracy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from helpers import cheap
from lorakit import RunConfig
from lorakit.config import ConfigError
from lorakit.experiment import checkpoint as ckpt
from lorakit.experiment.features import Inputs
from lorakit.experiment.manifests import read_manifest
from lorakit.experiment.models import add_adapters, encoder_is_frozen, load_model, plan_targets
from lorakit.experiment.train import make_optimizer, run, select_best, train_step


@pytest.mark.parametrize("family", ["whisper", "moonshine"])
def test_train_step_lowers_loss_on_a_fixed_batch(family, small_corpus, whisper_dir, moonshine_dir):
    cfg = RunConfig(model=str(whisper_dir if family == "whisper" else moonshine_dir), lr=2e-2, warmup_ratio=0.0,
                    max_steps=30, eval_interval=30, lora_dropout=0.0)
    torch.manual_seed(0)
    sm = load_model(cfg.model)
    assert sm.family == family
    add_adapters(sm, cfg)
    optimizer, scheduler = make_optimizer(sm.model, cfg)
    inputs = Inputs(sm, cfg.rms_target, None, torch.device("cpu"))
    batch = read_manifest(small_corpus["train"]).utterances[:4]
    losses = [train_step(sm, inputs, [batch], optimizer, scheduler, cfg.max_grad_norm)["loss"] for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0], losses
    trainable = [n for n, p in sm.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # only adapters train


def test_gradient_checkpointing_gives_the_same_losses(tiny_cfg):
    short = {**tiny_cfg, "max_steps": 3, "eval_interval": 3, "target_modules": ""}
    plain = run(RunConfig(**short, run_id="plain"))
    ckpt_run = run(RunConfig(**short, run_id="recompute", gradient_checkpointing=True))
    losses = [[r["loss"] for r in _history(x.folder) if r["kind"] == "train"] for x in (plain, ckpt_run)]
    assert len(losses[0]) == 3 and losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_decoder_targets_freeze_the_encoder(whisper_dir):
    sm = load_model(str(whisper_dir))
    add_adapters(sm, RunConfig(target_modules="decoder"))
    assert encoder_is_frozen(sm)
    sm = load_model(str(whisper_dir))
    add_adapters(sm, RunConfig(target_modules=""))
    assert not encoder_is_frozen(sm)


def test_unknown_target_module_is_named(whisper_dir):
    sm = load_model(str(whisper_dir))
    with pytest.raises(ValueError, match="not_a_layer"):
        add_adapters(sm, RunConfig(target_modules="q_proj,not_a_layer"))


DECODER_QV = r".*decoder\.layers\.\d+\.self_attn\.(q_proj|v_proj)"


@pytest.mark.parametrize("form, targets, expected", [
    ("list", "q_proj,v_proj", r".*\.(q_proj|v_proj)"),  # peft's Whisper example: encoder, decoder and cross-attention
    ("regex", DECODER_QV, DECODER_QV),
    ("decoder", "decoder", r"model\.decoder\.layers\..*"),
    ("encoder", "encoder", r"model\.encoder\.layers\..*"),
    ("all", "", r"model\.(encoder|decoder)\.layers\..*"),
], ids=lambda v: v if v in ("list", "regex", "decoder", "encoder", "all") else "")
def test_every_target_modules_form_runs_with_the_encoder_cache_only_when_peft_left_the_encoder_alone(tiny_cfg, form, targets, expected):
    """The adapters land on exactly the linear layers the form names (read back from adapter_best/), and
    frozen-encoder mode (the encoder-output cache) follows the modules peft adapted, not the words used."""
    from safetensors import safe_open

    result = run(RunConfig(**cheap(tiny_cfg, target_modules=targets), run_id=f"targets-{form}"))
    m = result.metrics
    assert m["status"] == "finished"
    with safe_open(str(result.folder / "adapter_best" / "adapter_model.safetensors"), "pt") as f:
        adapted = {k.removeprefix("base_model.model.").split(".lora_")[0] for k in f.keys()}
    linear = {n for n, mod in load_model(tiny_cfg["model"]).model.named_modules() if isinstance(mod, torch.nn.Linear)}
    assert adapted == {n for n in linear if re.fullmatch(expected, n)} and m["target_modules"] == len(adapted)
    encoder_adapted = any(".encoder." in n for n in adapted)
    assert (m["encoder_cache_hits"] + m["encoder_cache_misses"] > 0) != encoder_adapted
    saved = json.loads((result.folder / "adapter_best" / "adapter_config.json").read_text())["target_modules"]
    assert isinstance(saved, str) == (targets == DECODER_QV)  # a regex reaches peft as a regex


def test_target_plan_is_what_peft_adapts(whisper_dir):
    sm = load_model(str(whisper_dir))
    plan = plan_targets(sm.model, RunConfig(target_modules="q_proj,v_proj").target_module_spec())
    assert len(plan.modules) == 12 and not plan.encoder_frozen  # 2 encoder + 2x2 decoder attentions, q and v
    assert add_adapters(sm, RunConfig(target_modules="q_proj,v_proj"), plan) is plan and not encoder_is_frozen(sm)
    assert set(sm.model.targeted_module_names) == set(plan.modules)
    with pytest.raises(ValueError, match="not layers LoRA can adapt.*WhisperDecoder"):
        plan_targets(load_model(str(whisper_dir)).model, r"model\.decoder.*")  # the decoder block itself, its norms...
    with pytest.raises(ValueError, match="matches no layer"):
        plan_targets(load_model(str(whisper_dir)).model, r".*\.nothing_here")
    with pytest.raises(ConfigError, match="'target_modules'.*regular expression"):
        RunConfig(target_modules="(q_proj|v_proj")


def test_select_best_honours_the_guardrail():
    evals = [
        {"step": 50, "domain_wer": 0.20, "heldout_wer": 0.050},  # heldout +1.0 pt: disqualified
        {"step": 100, "domain_wer": 0.25, "heldout_wer": 0.041},  # +0.1 pt: qualifies
        {"step": 150, "domain_wer": 0.23, "heldout_wer": 0.042},  # +0.2 pt: qualifies (boundary), best
    ]
    assert select_best(evals, heldout_baseline=0.040, guardrail_pts=0.2) == (2, True)
    # tighter guardrail: only step 100 qualifies
    assert select_best(evals, heldout_baseline=0.040, guardrail_pts=0.15) == (1, True)
    # none qualifies: fall back to the lowest domain WER, flagged
    assert select_best(evals, heldout_baseline=0.030, guardrail_pts=0.2) == (0, False)
    # no heldout manifest: plain lowest domain WER
    assert select_best([{**e, "heldout_wer": None} for e in evals], None, 0.2) == (0, True)


def _history(folder):
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def test_run_writes_a_complete_record_and_reports_the_reloaded_best(tiny_cfg):
    result = run(RunConfig(**tiny_cfg, run_id="full", verify_best=0))  # 0: every clip re-evaluated from adapter_best/
    folder = result.folder
    m = json.loads((folder / "metrics.json").read_text())
    assert m["status"] == "finished" and m["steps"] == 4 and m["stop_reason"] == "max_steps"
    for key in ("run_id", "date", "command", "dataset", "lr", "manifest", "baseline_wer", "tuned_wer",
                "heldout_baseline_wer", "heldout_tuned_wer", "best_step", "elapsed_s"):
        assert m[key] is not None, key
    config = json.loads((folder / "config.json").read_text())
    assert config["config"]["lr"] == tiny_cfg["lr"] and config["manifests"]["train"]["sha256"]
    assert {"torch", "transformers", "peft"} <= set(config["versions"])
    hist = _history(folder)
    evals = [r for r in hist if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    assert [r["step"] for r in hist if r["kind"] == "train"] == [1, 2, 3, 4]
    # the reported WER is the reloaded adapter's, and it equals the in-memory evaluation at that step
    best = next(r for r in evals if r["step"] == m["best_step"])
    assert m["tuned_wer"] == pytest.approx(best["domain_wer"], abs=1e-12)
    assert m["heldout_tuned_wer"] == pytest.approx(best["heldout_wer"], abs=1e-12)
    for name in ("domain_baseline", "domain_step000002", "domain_step000004", "domain_best", "heldout_best"):
        rows = [json.loads(x) for x in (folder / "predictions" / f"{name}.jsonl").read_text().splitlines()]
        assert rows and {"ref", "hyp", "ref_norm", "hyp_norm", "errors", "ref_words"} <= set(rows[0])
    # adapter_best loads with plain peft
    from peft import PeftModel

    base = load_model(tiny_cfg["model"]).model
    PeftModel.from_pretrained(base, str(folder / "adapter_best"))
    meta = json.loads((folder / "adapter_best" / "meta.json").read_text())
    assert meta["step"] == m["best_step"]


def test_dev_sets_choose_and_test_sets_report(tiny_cfg, small_corpus):
    """With test manifests: every checkpoint is evaluated on the dev sets only, the reloaded best adapter and the
    baseline on the test sets once, and those are the reported numbers; the dev numbers stay in the record."""
    from lorakit.analysis.matrix import reported_on
    from lorakit.analysis.runs import load_run
    from lorakit.files import read_jsonl

    cfg = {**tiny_cfg, "domain_manifest": str(small_corpus["domain_dev"]), "heldout_manifest": str(small_corpus["heldout_dev"]),
           "domain_test_manifest": str(small_corpus["domain"]), "heldout_test_manifest": str(small_corpus["heldout"]),
           "real_manifest": str(small_corpus["replay"])}  # stands in for the real-speech set: reported, never chooses
    folder = run(RunConfig(**cfg, run_id="devtest")).folder
    m = json.loads((folder / "metrics.json").read_text())
    pred = folder / "predictions"

    def wer(name):
        rows = read_jsonl(pred / f"{name}.jsonl")
        return sum(r["errors"] for r in rows) / sum(r["ref_words"] for r in rows)

    assert m["reported_on"] == "test" and m["test_sets"] == {"domain": "domain_test", "heldout": "heldout_test"}
    assert m["manifest"] == str(small_corpus["domain"]) and m["heldout_manifest"] == str(small_corpus["heldout"])
    assert m["baseline_wer"] == pytest.approx(wer("domain_test_baseline")) and m["tuned_wer"] == pytest.approx(wer("domain_test_best"))
    assert m["heldout_tuned_wer"] == pytest.approx(wer("heldout_test_best"))
    assert len(read_jsonl(pred / "domain_test_best.jsonl")) == 16 and len(read_jsonl(pred / "domain_step000002.jsonl")) == 8
    assert not list(pred.glob("*_test_step*")) and not list(pred.glob("real_step*"))  # the test sets never take part in choosing
    assert m["real_baseline_wer"] == pytest.approx(wer("real_baseline")) and m["real_tuned_wer"] == pytest.approx(wer("real_best"))
    assert m["real_sdi"]["n"] == 12
    best = next(r for r in _history(folder) if r.get("kind") == "eval" and r["step"] == m["best_step"])
    assert m["dev"]["tuned_wer"] == pytest.approx(best["domain_wer"]) and m["dev"]["manifest"] == str(small_corpus["domain_dev"])
    assert m["dev"]["baseline_wer"] == pytest.approx(wer("domain_baseline"))
    r = load_run(folder)
    assert r.predictions_path("domain", "best").name == "domain_test_best.jsonl"
    assert r.predictions_path("domain", "step000002").name == "domain_step000002.jsonl"
    assert reported_on(m).startswith("test; chosen on dev")
    from lorakit.analysis.matrix import matrix_row

    assert matrix_row(r)["real"].endswith("(12 clips)")


def test_a_heldout_test_set_needs_a_heldout_dev_set(tiny_cfg, small_corpus):
    with pytest.raises(ConfigError, match="heldout_test_manifest"):
        RunConfig(**{**tiny_cfg, "heldout_manifest": "", "heldout_test_manifest": str(small_corpus["heldout"])})


def test_best_adapter_is_verified_on_a_sample_and_a_mismatch_forces_a_full_pass(tiny_cfg, monkeypatch):
    from lorakit.experiment import best as best_mod

    sampled = run(RunConfig(**tiny_cfg, run_id="sampled", verify_best=5))
    m = sampled.metrics
    assert m["best_verified"]["mode"] == "sample" and m["best_verified"]["utterances"] == 5
    assert m["best_verified"]["identical"] == 5
    best = next(r for r in _history(sampled.folder) if r["kind"] == "eval" and r["step"] == m["best_step"])
    assert m["tuned_wer"] == best["domain_wer"] and m["heldout_tuned_wer"] == best["heldout_wer"]

    real = best_mod.read_jsonl  # the verification reads the recorded predictions in best.py

    def tampered(path):  # what was recorded at the best step no longer matches the adapter on disk
        rows = real(path)
        if "domain_step" in path.name:
            rows[0] = {**rows[0], "hyp": rows[0]["hyp"] + " tampered"}
        return rows

    monkeypatch.setattr(best_mod, "read_jsonl", tampered)
    redone = run(RunConfig(**tiny_cfg, run_id="redone", verify_best=16))
    check = redone.metrics["best_verified"]
    assert check["mode"] == "full after mismatch" and check["identical"] == check["utterances"] - 1
    best = next(r for r in _history(redone.folder) if r["kind"] == "eval" and r["step"] == redone.metrics["best_step"])
    assert redone.metrics["tuned_wer"] == pytest.approx(best["domain_wer"], abs=1e-12)  # recomputed, not copied


def test_baseline_cache_misses_when_manifest_preprocessing_or_generation_change(tiny_cfg, capsys):
    from lorakit.experiment.features import Inputs
    from lorakit.experiment.manifests import read_manifest
    from lorakit.experiment.baseline import shared_baseline

    sm = load_model(tiny_cfg["model"])
    path = Path(tiny_cfg["domain_manifest"])
    utts, sha = read_manifest(path).utterances, read_manifest(path).sha256
    reversed_manifest = path.with_name("domain_reversed.jsonl")  # the same clips, other bytes
    reversed_manifest.write_text("\n".join(path.read_text().splitlines()[::-1]) + "\n")

    def baseline(**change):
        cfg = RunConfig(**{**tiny_cfg, **change})
        shared_baseline(sm, Inputs(sm, cfg.rms_target, None, torch.device("cpu")), "domain", utts,
                        read_manifest(cfg.domain_manifest).sha256, cfg, None)
        return "from the shared cache" in capsys.readouterr().out

    baseline()  # computes it (or finds it from an earlier test)
    assert baseline() and read_manifest(path).sha256 == sha  # the same inputs: a hit
    assert not baseline(domain_manifest=str(reversed_manifest))
    assert not baseline(rms_target=0.05)
    assert not baseline(max_new_tokens=10)


def test_baseline_and_encoder_cache_keys_include_precision_and_device_type(whisper_dir, tmp_path):
    """A bf16 GPU baseline (or encoder output) is not an fp32 CPU one: each (device type, autocast)
    pair has its own key, and the same pair always gets the same key."""
    from lorakit.experiment.baseline import baseline_key

    sm = load_model(str(whisper_dir))
    computes = [("cpu", None), ("cpu", torch.bfloat16), ("cuda", None), ("cuda", torch.bfloat16), ("cuda", torch.float16)]
    baseline = [baseline_key(sm, "sha", ["domain:1"], 0.075, 12, device_type=d, autocast=a, model_fingerprint="w") for d, a in computes]
    encoder = [Inputs.cache_dir_for(tmp_path, sm, 0.075, d, a) for d, a in computes]
    assert len(set(baseline)) == len(set(encoder)) == len(computes)
    assert baseline_key(sm, "sha", ["domain:1"], 0.075, 12, device_type="cpu", autocast=None, model_fingerprint="w") == baseline[0]
    assert Inputs.cache_dir_for(tmp_path, sm, 0.075, "cuda", torch.bfloat16) == encoder[3]


def test_baseline_is_computed_once_and_shared(tiny_cfg, capsys):
    a = run(RunConfig(**{**tiny_cfg, "max_steps": 2}, run_id="share_a"))
    b = run(RunConfig(**{**tiny_cfg, "max_steps": 2, "lr": 5e-4}, run_id="share_b", seed=3))
    assert "from the shared cache" in capsys.readouterr().out
    assert a.metrics["baseline_wer"] == b.metrics["baseline_wer"]
    assert a.metrics["heldout_baseline_wer"] == b.metrics["heldout_baseline_wer"]


def test_resume_from_checkpoint_last_matches_an_uninterrupted_run(tiny_cfg, monkeypatch):
    straight = run(RunConfig(**tiny_cfg, run_id="straight"))

    real_save = ckpt.save_training_state

    def crash_after_step_two(model, optimizer, scheduler, step, dst, meta):
        real_save(model, optimizer, scheduler, step, dst, meta)
        if step == 2:
            raise SystemExit("simulated crash after the step-2 checkpoint")

    monkeypatch.setattr(ckpt, "save_training_state", crash_after_step_two)
    with pytest.raises(SystemExit):
        run(RunConfig(**tiny_cfg, run_id="resumed"))
    folder = straight.folder.parent / "resumed"
    assert json.loads((folder / "metrics.json").read_text())["status"] == "failed"
    state = ckpt.load_training_state(folder / "checkpoint_last")
    assert state["step"] == 2
    monkeypatch.setattr(ckpt, "save_training_state", real_save)

    resumed = run(RunConfig(**tiny_cfg, run_id="resumed"))
    assert resumed.metrics["status"] == "finished" and resumed.metrics["steps"] == 4
    hist_a, hist_b = _history(straight.folder), _history(folder)
    assert [r["step"] for r in hist_b if r["kind"] == "train"] == [1, 2, 3, 4]  # no duplicated or missing step
    losses_a = [r["loss"] for r in hist_a if r["kind"] == "train"]
    losses_b = [r["loss"] for r in hist_b if r["kind"] == "train"]
    assert losses_b == pytest.approx(losses_a, rel=1e-5)  # same batches, same optimizer state
    sa = ckpt.load_training_state(straight.folder / "checkpoint_last")
    sb = ckpt.load_training_state(folder / "checkpoint_last")
    assert sa["step"] == sb["step"] == 4
    ea = sa["optimizer"]["state"][0]["exp_avg"]
    eb = sb["optimizer"]["state"][0]["exp_avg"]
    assert torch.allclose(ea, eb, rtol=1e-4, atol=1e-7)


def test_a_finished_run_is_not_overwritten(tiny_cfg):
    cfg = RunConfig(**{**tiny_cfg, "max_steps": 2}, run_id="once")
    run(cfg)
    with pytest.raises(Exception, match="already finished"):
        run(cfg)


def test_a_run_id_recorded_with_another_config_is_refused_before_the_model_loads(tiny_cfg, monkeypatch):
    """An unfinished run resumes only with the configuration it was recorded with: a changed recipe is
    refused, naming each changed parameter, and the record is left as it was. run_id, notes, command
    and output_dir shape no number, so they may differ."""
    from lorakit.experiment import train

    values = cheap(tiny_cfg, max_steps=2, eval_interval=2)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash at the first evaluation")

    with monkeypatch.context() as m:
        m.setattr(train, "evaluate_step", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(RunConfig(**values, run_id="recipe"))
    folder = Path(tiny_cfg["output_dir"]) / "recipe"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert json.loads(before["metrics.json"])["status"] == "failed" and "config.json" in before

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a refused run")

    with monkeypatch.context() as m:
        m.setattr(train, "load_model", no_model)
        with pytest.raises(ConfigError) as info:
            run(RunConfig(**{**values, "lr": 5e-4, "lora_r": 8}, run_id="recipe"))
    assert "lr: 0.001 -> 0.0005" in str(info.value) and "lora_r: 16 -> 8" in str(info.value)
    assert "max_steps" not in str(info.value) and "--force" in str(info.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    resumed = run(RunConfig(**values, run_id="recipe", notes="same recipe, new notes", command="again"))
    assert resumed.metrics["status"] == "finished"


def test_adapters_are_active_at_evaluation(tiny_cfg, small_corpus):
    """Evaluation goes through the peft-wrapped model: non-zero adapter weights change the output."""
    from lorakit.experiment.evaluate import transcribe

    sm = load_model(tiny_cfg["model"])
    utts = read_manifest(small_corpus["domain"]).utterances[:4]
    inputs = Inputs(sm, 0.075, None, torch.device("cpu"))
    before = transcribe(sm, utts, inputs, 4, 8)
    add_adapters(sm, RunConfig(lora_r=4))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in sm.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
    after = transcribe(sm, utts, inputs, 4, 8)
    assert before != after


@pytest.mark.parametrize("family", ["whisper", "moonshine"])
def test_features_stay_fp32_under_a_cpu_autocast(family, whisper_dir, moonshine_dir):
    """precision bf16 on a CPU: evaluation runs inside a CPU autocast, and Whisper's feature extractor
    computes its log-mels with torch there; they must come out fp32 (bf16 ones failed its .numpy())."""
    import numpy as np

    sm = load_model(str(whisper_dir if family == "whisper" else moonshine_dir))
    audio = [0.1 * np.sin(2 * np.pi * 220 * np.arange(16000, dtype=np.float32) / 16000)]
    plain = sm.features(audio)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = sm.features(audio)
    assert plain.keys() == under.keys()
    assert all(torch.equal(plain[k], under[k]) for k in plain)
    assert all(v.dtype != torch.bfloat16 for v in under.values())


def test_replay_clips_join_every_batch_and_are_checked_like_training_clips(tiny_cfg, small_corpus, tmp_path, monkeypatch):
    from helpers import absolute_lines, cheap, write_manifest
    from lorakit.experiment import train as train_mod
    from lorakit.experiment.prepare import prepare_data

    heldout = absolute_lines(small_corpus["heldout"], 1)
    too_long = {**absolute_lines(small_corpus["train"], 1)[0], "duration": 99.0}  # the duration filter drops it
    replay = write_manifest(tmp_path / "replay_mix.jsonl", absolute_lines(small_corpus["replay"]) + heldout + [too_long])
    cfg = RunConfig(**cheap(tiny_cfg, run_id="replayed", replay_manifest=str(replay), replay_ratio=0.5, batch_size=4, max_steps=2,
                            eval_interval=2, max_eval_utterances=0, heldout_manifest=tiny_cfg["heldout_manifest"]))
    splits = prepare_data(cfg)
    assert len(splits.replay) == 13 and splits.report["replay"] == {**splits.report["replay"], "used": 13, "dropped_over_max_seconds": 1,
                                                                     "per_batch": 2}
    assert splits.report["leakage"]["heldout"]["leaked"] == 1  # the heldout clip in the replay set is caught
    assert splits.report["leakage"]["heldout"]["examples"][0]["train_id"] == "replay_mix:13"
    seen = []
    real_step = train_mod.train_step

    def spy(sm, inputs, micro_batches, *args, **kwargs):
        seen.extend(micro_batches)
        return real_step(sm, inputs, micro_batches, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", spy)
    result = run(cfg)
    assert [sum(u.manifest == str(replay) for u in b) for b in seen] == [2, 2] and all(len(b) == 4 for b in seen)
    config = json.loads((result.folder / "config.json").read_text())
    assert config["manifests"]["replay"]["n_used"] == 13 and any("LEAKAGE" in w for w in result.metrics["warnings"])


def test_a_run_evaluates_exactly_at_the_listed_steps(tiny_cfg):
    from helpers import cheap

    result = run(RunConfig(**cheap(tiny_cfg, run_id="looks", max_steps=5, eval_interval=2, eval_steps="1,3", log_interval=10)))
    hist = _history(result.folder)
    assert [r["step"] for r in hist if r["kind"] == "eval"] == [1, 3, 5]  # the listed steps, then max_steps
    assert sorted(p.name for p in (result.folder / "predictions").glob("domain_step*.jsonl")) == [
        "domain_step000001.jsonl", "domain_step000003.jsonl", "domain_step000005.jsonl"]
    assert result.metrics["best_step"] in (1, 3, 5)


# --- what the loop is built from, step by step -----------------------------------------------------

@pytest.mark.parametrize("scheduler", ["linear", "cosine", "constant"])
def test_lr_schedule_step_by_step(scheduler):
    """Warmup over int(warmup_ratio x max_steps) steps from 0 to `lr`, then linear to 0, half a cosine to 0,
    or flat; the value at step s is what the s-th optimizer step uses."""
    import math

    cfg = RunConfig(lr=1e-3, max_steps=10, eval_interval=10, warmup_ratio=0.25, scheduler=scheduler)  # warmup: int(2.5) = 2
    layer = torch.nn.Linear(2, 2)
    optimizer, schedule = make_optimizer(layer, cfg)
    seen = []
    for _ in range(cfg.max_steps):
        seen.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    after = {"linear": lambda s: (10 - s) / 8, "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)), "constant": lambda s: 1.0}
    expected = [1e-3 * (s / 2 if s < 2 else after[scheduler](s)) for s in range(10)]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[:3] == pytest.approx([0.0, 5e-4, 1e-3]) and optimizer.param_groups[0]["lr"] == pytest.approx(
        {"linear": 0.0, "cosine": 0.0, "constant": 1e-3}[scheduler], abs=1e-12)


def test_grad_accum_2_equals_one_batch_twice_as_large(whisper_dir, small_corpus):
    """Two micro-batches of 2 clips accumulate to the step of one 4-clip batch: the same loss and the same
    updated adapter weights (the loss is weighted by label tokens, so clips of unequal length count alike)."""
    utts = read_manifest(small_corpus["train"]).utterances[:4]
    cfg = RunConfig(model=str(whisper_dir), lr=1e-2, warmup_ratio=0.0, max_steps=2, eval_interval=2, lora_dropout=0.0)
    results = []
    for micro_batches in ([utts[:2], utts[2:]], [utts]):
        torch.manual_seed(0)
        sm = load_model(cfg.model)
        add_adapters(sm, cfg)
        optimizer, scheduler = make_optimizer(sm.model, cfg)
        inputs = Inputs(sm, cfg.rms_target, None, torch.device("cpu"))
        losses = [train_step(sm, inputs, micro_batches, optimizer, scheduler, cfg.max_grad_norm)["loss"] for _ in range(2)]
        results.append((losses, {n: p.detach().clone() for n, p in sm.model.named_parameters() if p.requires_grad}))
    lengths = {len(Inputs(sm, 0.075, None, torch.device("cpu")).sm.label_ids(u.text)) for u in utts}
    assert len(lengths) > 1  # clips of unequal label length: a plain mean of the micro-batch means would differ
    (acc_losses, acc_weights), (big_losses, big_weights) = results
    assert acc_losses == pytest.approx(big_losses, rel=1e-5)
    assert acc_weights.keys() == big_weights.keys()
    assert all(torch.allclose(acc_weights[k], big_weights[k], rtol=1e-4, atol=1e-6) for k in acc_weights)


def test_wer_stop_threshold_stops_the_run_and_records_why(tiny_cfg, monkeypatch):
    """domain WER > baseline x wer_stop_threshold at an evaluation stops training there; below it, the run
    goes on. The evaluations are real; their domain WER is scaled to put it on either side of the line."""
    from lorakit.experiment import train

    real_evaluate, real_baselines = train.evaluate_step, train.compute_baselines
    baseline: list[float] = []
    scale = {2: 1.5, 4: 3.0}  # threshold 2: step 2 goes on, step 4 stops

    def baselines(r):
        out = real_baselines(r)
        baseline.append(out["domain"].wer)
        return out

    def scaled(sm, inputs, splits, cfg, step, record, autocast, accelerator=None):
        row = real_evaluate(sm, inputs, splits, cfg, step, record, autocast, accelerator)
        return {**row, "domain_wer": scale[step] * baseline[0]}

    monkeypatch.setattr(train, "compute_baselines", baselines)
    monkeypatch.setattr(train, "evaluate_step", scaled)
    result = run(RunConfig(**cheap(tiny_cfg, max_steps=8, eval_interval=2, wer_stop_threshold=2.0), run_id="stopped"))
    m = json.loads((result.folder / "metrics.json").read_text())
    assert m["status"] == "finished" and m["steps"] == 4
    assert m["stop_reason"].startswith("wer_stop_threshold: domain WER") and "> 2.0 x baseline" in m["stop_reason"]
    hist = _history(result.folder)
    assert [r["step"] for r in hist if r["kind"] == "eval"] == [2, 4] and max(r["step"] for r in hist) == 4
    # the loop steps the schedule once per optimizer step: linear from lr to 0 over max_steps (no warmup here)
    assert [r["lr"] for r in hist if r["kind"] == "train"] == pytest.approx([1e-3 * (8 - k) / 8 for k in range(4)])


@pytest.mark.slow
def test_batched_evaluation_equals_stock_batch_1_generate(small_corpus, tmp_path):
    """lorakit's batched, length-sorted transcription (from features, and from the encoder-output cache)
    gives, clip for clip, what transformers' own generate gives one clip at a time. On the bundled
    whisper-tiny.en: the tiny random Whisper says the same few tokens whatever it hears."""
    from lorakit.experiment.convert_ct2_whisper import BUNDLED_NAME
    from lorakit.experiment.evaluate import transcribe

    sm = load_model(BUNDLED_NAME)
    utts = read_manifest(small_corpus["domain"]).utterances[:8]
    plain = Inputs(sm, 0.075, None, torch.device("cpu"))
    stock = []
    for u in utts:
        ids = sm.model.generate(input_features=plain.features([u])["input_features"], max_new_tokens=48, num_beams=1, do_sample=False)
        stock.append(sm.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip())
    assert len({len(t.split()) for t in stock}) > 2  # hypotheses of several lengths: batches hold finished and running rows
    assert transcribe(sm, utts, plain, 8, 48) == stock
    cached = Inputs(sm, 0.075, tmp_path / "encoder", torch.device("cpu"))
    assert transcribe(sm, utts, cached, 3, 48) == stock and cached.encoder_misses == len(utts)
    assert transcribe(sm, utts, cached, 3, 48) == stock and cached.encoder_hits == len(utts)  # read back from the cache


def test_a_prompt_reaches_every_generation_and_the_baseline_key(tiny_cfg, whisper_dir, tmp_path):
    """prompt_ids change what the model decodes (the output holds no prompt token), the baseline cache tells a
    prompted baseline from a plain one, and an over-long prompt keeps its first tokens up to Whisper's limit."""
    from lorakit.experiment.baseline import baseline_key
    from lorakit.experiment.models import load_model

    sm = load_model(str(whisper_dir))
    feats = {"input_features": torch.randn(2, sm.base.config.num_mel_bins, 3000)}
    seen = []  # the token ids the decoder reads at its first step
    sm.base.model.decoder.register_forward_pre_hook(lambda mod, args, kw: seen.append(kw["input_ids"][0].tolist()), with_kwargs=True)
    plain = sm.generate(feats, 8)
    key_plain = baseline_key(sm, "sha", ["a"], 0.075, 8, device_type="cpu", autocast=None)
    info = sm.set_prompt("Amoxicillin, metformin, cholecystectomy.")
    first = len(seen)
    prompted = sm.generate(feats, 8)
    assert info["tokens"] == len(sm.prompt_ids) - 1 > 3 and info["cut_from_tokens"] is None
    assert int(sm.prompt_ids[0]) == sm.processor.tokenizer.convert_tokens_to_ids("<|startofprev|>")
    assert seen[first][: len(sm.prompt_ids)] == sm.prompt_ids.tolist() and seen[0][0] != sm.prompt_ids[0]
    assert prompted.shape[1] <= 8 + len(seen[0])  # the output leaves the prompt out
    assert baseline_key(sm, "sha", ["a"], 0.075, 8, device_type="cpu", autocast=None) != key_plain
    long = sm.set_prompt(" ".join(["cholecystectomy"] * 400))
    assert long["tokens"] == sm.base.config.max_target_positions // 2 - 2 and long["cut_from_tokens"] > long["tokens"]
    sm.set_prompt("")
    assert torch.equal(sm.generate(feats, 8), plain)


def test_prompt_from_a_terms_file_and_its_errors(tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("amoxicillin\n\nmetformin\n")
    assert RunConfig(prompt=f"@{terms}").prompt_text() == "amoxicillin, metformin."
    with pytest.raises(ConfigError, match="cannot read"):
        RunConfig(prompt=f"@{tmp_path / 'missing.txt'}").prompt_text()
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ConfigError, match="holds no terms"):
        RunConfig(prompt=f"@{tmp_path / 'empty.txt'}").prompt_text()
    with pytest.raises(ConfigError, match="prompt_only"):
        RunConfig(prompt_only=True)


@pytest.mark.slow
def test_prompt_only_is_the_base_model_with_the_prompt_against_the_base_model(tiny_cfg, small_corpus):
    """On the bundled tiny.en (the tiny random Whisper says nothing a prompt could change): the baseline is the
    plain base model, the reported "tuned" predictions are the same model prompted with the domain terms."""
    from lorakit.analysis.matrix import matrix_row
    from lorakit.analysis.runs import load_run
    from lorakit.experiment.convert_ct2_whisper import BUNDLED_NAME
    from lorakit.files import read_jsonl

    terms = Path(small_corpus["domain"]).parent / "terms.txt"
    cfg = {**tiny_cfg, "model": BUNDLED_NAME, "max_eval_utterances": 8, "max_new_tokens": 48}
    folder = run(RunConfig(**cfg, run_id="prompted", prompt=f"@{terms}", prompt_only=True)).folder
    m = json.loads((folder / "metrics.json").read_text())
    assert m["status"] == "finished" and m["stop_reason"] == "prompt_only" and m["steps"] == 0
    assert m["prompt"]["tokens"] == 222 < m["prompt"]["cut_from_tokens"]  # the terms list is cut to Whisper's limit (223 with <|startofprev|>)
    base, tuned = (read_jsonl(folder / "predictions" / f"domain_test_{t}.jsonl") for t in ("baseline", "best"))  # reported on test
    assert [r["id"] for r in base] == [r["id"] for r in tuned] and [r["hyp"] for r in base] != [r["hyp"] for r in tuned]
    assert m["tuned_wer"] == pytest.approx(sum(r["errors"] for r in tuned) / sum(r["ref_words"] for r in tuned))
    assert m["baseline_wer"] == pytest.approx(sum(r["errors"] for r in base) / sum(r["ref_words"] for r in base))
    assert not (folder / "adapter_best").exists() and not (folder / "history.jsonl").exists()  # nothing trained or evaluated
    assert matrix_row(load_run(folder))["adapter"] == "none (prompt only)"
