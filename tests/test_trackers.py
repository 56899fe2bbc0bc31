"""`report_to`: a run on the tiny Whisper mirrors its record to TensorBoard and to MLflow; the logs are read
back with each tool's own reader (tensorboard's event accumulator, MLflow's client on a local store)."""

from __future__ import annotations

import json

import pytest

from helpers import cheap
from lorakit import RunConfig
from lorakit.config import ConfigError
from lorakit.experiment.train import run


def history(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "history.jsonl").read_text().splitlines()]


def test_report_to_is_validated_and_does_not_change_the_run():
    with pytest.raises(ConfigError, match="'report_to'"):
        RunConfig(report_to="neptune")
    assert RunConfig(report_to="tensorboard").config_hash() == RunConfig().config_hash()


def test_tensorboard_holds_the_losses_lr_every_evaluation_and_the_final_metrics(tiny_cfg):
    pytest.importorskip("tensorboard", reason="the optional extra lorakit[tensorboard]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(RunConfig.from_dict(cheap(tiny_cfg, max_steps=2, eval_interval=1, report_to="tensorboard", run_id="tb")))
    logs = EventAccumulator(str(result.folder / "trackers" / "tb")).Reload()
    scalars = {tag: [(e.step, e.value) for e in logs.Scalars(tag)] for tag in logs.Tags()["scalars"]}
    rows = history(result.folder)
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert scalars["train/loss"] == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in train]
    assert scalars["train/lr"] == [(r["step"], pytest.approx(r["lr"], rel=1e-6)) for r in train]
    assert scalars["eval/domain_wer"] == [(r["step"], pytest.approx(r["domain_wer"], rel=1e-6)) for r in evals] and len(evals) == 2
    assert scalars["final/tuned_wer"] == [(2, pytest.approx(result.metrics["tuned_wer"], rel=1e-6))]
    assert scalars["final/baseline_wer"][0][1] == pytest.approx(result.metrics["baseline_wer"], rel=1e-6)


def test_mlflow_holds_the_config_metrics_and_final_numbers(tiny_cfg, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the optional extra lorakit[mlflow]")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow's local store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = run(RunConfig.from_dict(cheap(tiny_cfg, max_steps=2, eval_interval=1, report_to="mlflow", run_id="mlf")))
    client = MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs([client.get_experiment_by_name("lorakit").experiment_id])
    assert found.info.run_name == "mlf" and found.info.status == "FINISHED"
    assert found.data.params["lr"] == str(tiny_cfg["lr"]) and found.data.params["report_to"] == "mlflow"
    losses = client.get_metric_history(found.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in losses] == [(r["step"], pytest.approx(r["loss"], rel=1e-6))
                                                   for r in history(result.folder) if r["kind"] == "train"]
    assert [m.step for m in client.get_metric_history(found.info.run_id, "eval/domain_wer")] == [1, 2]
    assert found.data.metrics["final/tuned_wer"] == pytest.approx(result.metrics["tuned_wer"])
