"""Self-distillation from the frozen base model (`distill_weight`): the KL term on tiny random models and the
small real corpus, the parameters' checks, and a real run's record."""

from __future__ import annotations

import json

import pytest
import torch

from lorakit import RunConfig, cli
from lorakit.config import ConfigError
from lorakit.experiment.batches import mixed_batches
from lorakit.experiment.distill import Distill
from lorakit.experiment.features import Inputs
from lorakit.experiment.manifests import read_manifest
from lorakit.experiment.models import add_adapters, load_model
from lorakit.experiment.train import make_optimizer, run, train_step


def _trainer(model_dir, lr: float = 2e-2, seed: int = 0):
    cfg = RunConfig(model=str(model_dir), lr=lr, warmup_ratio=0.0, max_steps=30, eval_interval=30, lora_dropout=0.0)
    torch.manual_seed(seed)
    sm = load_model(cfg.model)
    add_adapters(sm, cfg)
    optimizer, scheduler = make_optimizer(sm.model, cfg)
    return sm, Inputs(sm, cfg.rms_target, None, torch.device("cpu")), optimizer, scheduler


def _kl_to_base(sm, inputs, batch) -> float:
    """KL(base || adapted) at T = 1 over every label token of `batch`, the adapted model in eval mode (a held measure)."""
    labels, model_in = inputs.labels(batch), inputs.model_inputs(batch)
    sm.model.eval()
    with torch.no_grad():
        logits = sm.model(**model_in, labels=labels).logits
        return Distill(1.0, 1.0, "all").term(sm.model, batch, model_in, labels, logits, None).item()


@pytest.mark.parametrize("family", ["whisper", "moonshine"])
def test_a_fresh_adapter_is_the_base_model_and_training_moves_it_away(family, small_corpus, whisper_dir, moonshine_dir):
    """At step 0 (lora_B = 0) the adapted model is the base model: the KL is 0; a few steps at a high LR make it > 0.
    The step's "loss" is the CE alone (the model's own loss), "distill_kl" the KL beside it."""
    sm, inputs, optimizer, scheduler = _trainer(whisper_dir if family == "whisper" else moonshine_dir)
    train = read_manifest(small_corpus["train"]).utterances[:3]
    replay = read_manifest(small_corpus["replay"]).utterances[:1]
    distill = Distill(1.0, 2.0, "replay", frozenset(replay))
    batch = train + replay
    with torch.no_grad():
        sm.model.train()
        ce = sm.model(**inputs.model_inputs(batch), labels=inputs.labels(batch)).loss.item()
    first = train_step(sm, inputs, [batch], optimizer, scheduler, 1.0, distill=distill)
    assert first["distill_kl"] == pytest.approx(0.0, abs=1e-6) and first["loss"] == pytest.approx(ce, rel=1e-6)
    later = [train_step(sm, inputs, [train], optimizer, scheduler, 1.0)["loss"] for _ in range(5)]
    assert later[-1] < later[0]
    assert train_step(sm, inputs, [batch], optimizer, scheduler, 1.0, distill=distill)["distill_kl"] > 1e-3


def test_distill_weight_zero_is_todays_step(whisper_dir, small_corpus):
    """distill_weight 0 is no distillation at all: the same losses, weights and row as a step without it."""
    batches = list(zip(range(3), mixed_batches(read_manifest(small_corpus["train"]).utterances,
                                                read_manifest(small_corpus["replay"]).utterances, 4, 1, seed=0)))
    assert Distill.from_config(RunConfig(distill_weight=0.0), []) is None
    rows = []
    for distill in (None, Distill.from_config(RunConfig(distill_weight=0.0), [])):
        sm, inputs, optimizer, scheduler = _trainer(whisper_dir)
        rows.append([train_step(sm, inputs, [b], optimizer, scheduler, 1.0, distill=distill) for _, b in batches])
    assert rows[0] == rows[1] and "distill_kl" not in rows[0][0]


def test_a_heavy_distill_weight_stays_closer_to_the_base_model(whisper_dir, small_corpus):
    """The same seeded batches (3 training + 1 replay clip), 8 steps at LR 2e-2, with and without a heavy KL term on
    every clip: measured on held-out clips none of them trained on, the distilled model stays nearer the base."""
    train, replay = read_manifest(small_corpus["train"]).utterances, read_manifest(small_corpus["replay"]).utterances
    held = read_manifest(small_corpus["heldout"]).utterances[:4]
    kls = {}
    for weight in (0.0, 5.0):
        sm, inputs, optimizer, scheduler = _trainer(whisper_dir)
        distill = Distill.from_config(RunConfig(distill_weight=weight, distill_on="all"), replay)
        batches = mixed_batches(train, replay, 4, 1, seed=0)
        for _ in range(8):
            train_step(sm, inputs, [next(batches)], optimizer, scheduler, 1.0, distill=distill)
        kls[weight] = _kl_to_base(sm, inputs, held)
    assert kls[0.0] > 1e-3 and kls[5.0] < 0.5 * kls[0.0], kls


@pytest.mark.parametrize("values, needle", [
    ({"distill_weight": -0.5}, r"^parameter 'distill_weight' = -0.5: must be >= 0 \(0: off\)$"),
    ({"distill_weight": 1.0, "distill_temperature": 0}, r"^parameter 'distill_temperature' = 0.0: must be > 0$"),
    ({"distill_weight": 1.0, "distill_on": "domain"}, r"^parameter 'distill_on' = 'domain': must be one of \('replay', 'all'\)$"),
    ({"distill_weight": 1.0, "replay_ratio": 0.0}, r"^parameter 'distill_on' = 'replay': 'replay' distills on the replay clips, and this run has none"),
])
def test_bad_distill_parameters_fail_in_one_line_before_a_model_loads(values, needle, capsys, monkeypatch):
    with pytest.raises(ConfigError, match=needle) as info:
        RunConfig.from_dict(values)
    assert "\n" not in str(info.value)

    def no_kernel(*args, **kwargs):
        raise AssertionError("a run started for a recipe with a bad parameter")

    monkeypatch.setattr("lorakit.launch.notebooks.execute", no_kernel)
    assert cli.main(["run", "", *(x for k, v in values.items() for x in ("-p", k, str(v)))]) == 2  # `lorakit run` alike
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("lorakit run: parameter 'distill_")


from lorakit.record import config_changes  # noqa: E402


def test_old_records_and_default_configs_keep_their_hash_and_compare_equal():
    """The distill_* parameters are left out of the config hash at their defaults (run ids and records written before
    them keep theirs: 4c53eb0a is the demo recipe's hash before they existed), and a record without them reads as off."""
    demo = RunConfig.from_files("params/default.yaml", "params/demo.yaml")
    assert demo.config_hash() == "4c53eb0a"
    assert RunConfig(distill_weight=0.5).config_hash() != RunConfig().config_hash()
    old = {k: v for k, v in demo.to_dict().items() if not k.startswith("distill_")}
    assert config_changes(demo, old) == {}
    assert config_changes(RunConfig.from_dict({**old, "distill_weight": 0.5, "distill_on": "all"}), old) == {
        "distill_weight": (0.0, 0.5), "distill_on": ("replay", "all")}


def test_a_run_with_distillation_records_the_term(tiny_cfg, small_corpus):
    """A real run (replay 1 clip of 4, distill_weight 1 on the replay clips) finishes; config.json holds the
    parameters, every history train row the KL beside the CE, metrics.json the parameters and the logged KL."""
    cfg = RunConfig(**{**tiny_cfg, "run_id": "distilled", "replay_manifest": str(small_corpus["replay"]), "replay_ratio": 0.25,
                       "distill_weight": 1.0, "lr": 2e-2, "max_new_tokens": 4, "max_eval_utterances": 4, "heldout_manifest": ""})
    result = run(cfg)
    assert result.metrics["status"] == "finished"
    config = json.loads((result.folder / "config.json").read_text())["config"]
    assert (config["distill_weight"], config["distill_temperature"], config["distill_on"]) == (1.0, 2.0, "replay")
    rows = [json.loads(x) for x in (result.folder / "history.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and all(r["distill_kl"] >= 0 and r["loss"] > 0 for r in train)
    assert train[0]["distill_kl"] == pytest.approx(0.0, abs=1e-6) and train[-1]["distill_kl"] > 0  # B = 0 at step 1
    d = result.metrics["distill"]
    assert {k: d[k] for k in ("weight", "temperature", "on", "clips_per_batch")} == {"weight": 1.0, "temperature": 2.0, "on": "replay",
                                                                                   "clips_per_batch": 1}
    assert d["first"] == {"step": 1, "kl": train[0]["distill_kl"]} and d["last"] == {"step": 4, "kl": train[-1]["distill_kl"]}
