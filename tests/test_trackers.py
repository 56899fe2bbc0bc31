"""`report_to`: a run on the tiny Whisper mirrors its record to TensorBoard, MLflow and wandb (offline); the
logs are read back with each tool's own reader where it has one (tensorboard's event accumulator, MLflow's
client on a local store) and, for wandb, by decoding its offline `.wandb` file into wandb's own protobuf
records (wandb >= 0.2x ships no Python reader of that file any more)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from helpers import cheap
from lorakit import RunConfig
from lorakit.config import ConfigError
from lorakit.experiment.train import run


def history(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "history.jsonl").read_text().splitlines()]


def assert_series_are_the_record(series: dict[str, list], result) -> None:
    """A tracker's {tag: [(step, value), ...]} of a 2-step run with an evaluation at each step holds
    history.jsonl's losses, LRs and domain WERs step for step and metrics.json's final numbers."""
    rows = history(result.folder)
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert series["train/loss"] == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in train]
    assert series["train/lr"] == [(r["step"], pytest.approx(r["lr"], rel=1e-6)) for r in train]
    assert series["eval/domain_wer"] == [(r["step"], pytest.approx(r["domain_wer"], rel=1e-6)) for r in evals] and len(evals) == 2
    assert series["final/tuned_wer"] == [(2, pytest.approx(result.metrics["tuned_wer"], rel=1e-6))]
    assert series["final/baseline_wer"][0][1] == pytest.approx(result.metrics["baseline_wer"], rel=1e-6)


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
    assert_series_are_the_record(scalars, result)


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


WANDB_BLOCK = 32768  # the .wandb file: LevelDB's log format, after a 7-byte file header (":W&B", magic 0xBEE1, version)
WANDB_RECORD_HEADER = struct.Struct("<IHB")  # CRC32, payload length, type (1 full, 2 first, 3 middle, 4 last chunk)


def wandb_records(path: Path) -> list:
    """Every record of an offline run's `.wandb` file, as wandb.proto.wandb_internal_pb2.Record."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0), data[:7]
    records, pending, pos = [], b"", 7
    while pos + WANDB_RECORD_HEADER.size <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        _, length, kind = WANDB_RECORD_HEADER.unpack_from(data, pos) if left >= WANDB_RECORD_HEADER.size else (0, 0, 0)
        if kind == 0:  # a block's zero-padded tail
            pos += left
            continue
        pending += data[pos + WANDB_RECORD_HEADER.size:pos + WANDB_RECORD_HEADER.size + length]
        pos += WANDB_RECORD_HEADER.size + length
        if kind in (1, 4):
            records.append(Record.FromString(pending))
            pending = b""
    return records


def test_wandb_offline_holds_the_config_losses_every_evaluation_and_the_final_metrics(tiny_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the optional extra lorakit[wandb]")
    for key, sub in (("WANDB_DIR", "dir"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(key, str(tmp_path / "wandb" / sub))  # nothing written to the home folder
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run(RunConfig.from_dict(cheap(tiny_cfg, max_steps=2, eval_interval=1, report_to="wandb", run_id="wb")))
    (path,) = (result.folder / "trackers" / "wandb").glob("offline-run-*/run-*.wandb")  # make_tracker's dir, offline
    records = wandb_records(path)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds[-1] == "exit" and records[-1].exit.exit_code == 0  # tracker.finish() closed the run
    assert next(r.run for r in records if r.HasField("run")).display_name == "wb"
    config = {i.key: json.loads(i.value_json) for r in records if r.HasField("config") for i in r.config.update}
    assert config["lr"] == tiny_cfg["lr"] and config["report_to"] == "wandb" and config["run_id"] == "wb"
    logged: dict[str, list] = {}  # key -> [(step, value)], as the TensorBoard test reads its scalars
    for r in records:
        if r.HasField("history"):
            for item in r.history.item:  # wandb-core writes a history key as nested_key (["train/loss"]), not key
                key = item.key or "/".join(item.nested_key)
                logged.setdefault(key, []).append((r.history.step.num, json.loads(item.value_json)))
    assert_series_are_the_record(logged, result)
