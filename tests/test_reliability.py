"""Parameters refused before the model loads, determinism on CPU, train/eval leakage reported, and
failed runs recorded (run record, executed notebook, run matrix)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

import lorakit.experiment.baseline as baseline_mod
import lorakit.experiment.train as train_mod
from lorakit import RunConfig
from lorakit.config import ConfigError
from lorakit.analysis.matrix import run_matrix, write_matrix
from lorakit.analysis.runs import load_runs
from lorakit.experiment.train import run
from helpers import absolute_lines, cheap, write_manifest

ROOT = Path(__file__).resolve().parent.parent


def history(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "history.jsonl").read_text().splitlines()]


def predictions(folder: Path) -> dict[str, list[tuple[str, str]]]:
    return {p.stem: [(r["id"], r["hyp"]) for r in map(json.loads, p.read_text().splitlines())]
            for p in sorted((folder / "predictions").glob("*.jsonl"))}


# --- 2. parameters: errors before any model loads ------------------------------------------------------

BAD_PARAMETERS = [  # (values over tiny_cfg, the parameter the message must name, a fragment of the reason)
    ({"learning_rate": 1e-3}, "learning_rate", "unknown parameter"),
    ({"lr": "fast"}, "lr", "expects float"),
    ({"max_steps": 2.5}, "max_steps", "expects int"),
    ({"use_dora": "yes"}, "use_dora", "expects bool"),
    ({"model": 3}, "model", "expects str"),
    ({"lr": 0}, "lr", "must be > 0"),
    ({"lr": -1e-4}, "lr", "must be > 0"),
    ({"lr": float("nan")}, "lr", "finite"),
    ({"max_steps": 0}, "max_steps", "must be >= 1"),
    ({"max_steps": 4, "eval_interval": 5}, "eval_interval", "between 1 and max_steps (4)"),
    ({"on_bad_audio": "ignore"}, "on_bad_audio", "must be one of"),
    ({"train_manifest": "/nowhere/train.jsonl"}, "train_manifest", "manifest file not found"),
    ({"domain_manifest": "missing/domain.jsonl"}, "domain_manifest", "manifest file not found"),
    ({"heldout_manifest": "/nowhere/heldout.jsonl"}, "heldout_manifest", "manifest file not found"),
    ({"replay_manifest": "/nowhere/replay.jsonl", "replay_ratio": 0.25}, "replay_manifest", "manifest file not found"),
    ({"replay_ratio": 1.0}, "replay_ratio", "must be in [0, 1)"),  # (replay_manifest "" is no error: it turns replay off)
    # these rewrite the base weights at init: adapter_best/ would not reproduce the run on the original model
    ({"init_lora_weights": "pissa"}, "init_lora_weights", "moves part of the base weights into the adapter"),
    ({"init_lora_weights": "pissa_niter_4"}, "init_lora_weights", "would not reproduce the run on the original model"),
    ({"init_lora_weights": "olora"}, "init_lora_weights", "moves part of the base weights into the adapter"),
    ({"init_lora_weights": "corda"}, "init_lora_weights", "lorakit refuses it"),
    ({"init_lora_weights": "kaiming"}, "init_lora_weights", "must be one of True, False, 'gaussian', 'orthogonal'"),
]


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the parameters were checked")

    monkeypatch.setattr(train_mod, "load_model", refuse)


@pytest.mark.parametrize("values,name,reason", BAD_PARAMETERS, ids=[f"{n}:{r}" for _, n, r in BAD_PARAMETERS])
def test_bad_parameter_fails_before_the_model_loads(values, name, reason, tiny_cfg, no_model_loading, tmp_path):
    with pytest.raises(ConfigError) as info:
        run(RunConfig.from_dict({**tiny_cfg, **values, "run_id": "bad"}))
    assert repr(name) in str(info.value) and reason in str(info.value)
    assert not (tmp_path / "runs").exists()  # refused before a run folder existed


def test_bad_parameters_from_yaml_and_notebook_globals(tiny_cfg, no_model_loading, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 5e-5\nmax_step: 100\n")  # YAML reads 5e-5 as a string; max_step is misspelt
    with pytest.raises(ConfigError, match=r"recipe\.yaml: unknown parameter\(s\) 'max_step'"):
        RunConfig.from_files(recipe)
    recipe.write_text("lr: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"parameter 'lr' expects float, got \[1, 2\]"):
        RunConfig.from_files(recipe)
    notebook_globals = {**tiny_cfg, "leraning_rate": 1e-4, "np": np, "_private": 1}
    with pytest.raises(ConfigError, match="notebook parameters: unknown parameter.*'leraning_rate'"):
        RunConfig.from_namespace(notebook_globals)
    with pytest.raises(TypeError, match="unexpected keyword argument 'leraning_rate'"):
        RunConfig(leraning_rate=1e-4)  # the dataclass itself: Python's error names the key too


# --- 4. determinism -------------------------------------------------------------------------------------

def test_same_config_and_seed_twice_give_identical_results(tiny_cfg, monkeypatch):
    """Decoder adapters (frozen, cached encoder) with dropout on; the second run also recomputes its
    baseline instead of reading the shared cache, so every number is produced twice."""
    values = cheap(tiny_cfg, max_steps=4, eval_interval=2, lora_dropout=0.1, max_eval_utterances=3)
    a = run(RunConfig(**values, run_id="det_a"))
    monkeypatch.setattr(baseline_mod, "cached_baseline", lambda *args: None)  # the shared cache lives in baseline.py
    b = run(RunConfig(**values, run_id="det_b"))

    def comparable(folder):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in history(folder)]

    ha, hb = comparable(a.folder), comparable(b.folder)
    assert [r["step"] for r in ha if r["kind"] == "train"] == [1, 2, 3, 4]
    assert ha == hb  # losses, grad norms, learning rates and every evaluation, bit for bit
    assert predictions(a.folder) == predictions(b.folder)  # baseline, each step, best
    for key in ("baseline_wer", "tuned_wer", "best_step", "domain_sdi", "baseline_sdi"):
        assert a.metrics[key] == b.metrics[key], key
    wa, wb = load_file(str(a.folder / "adapter_best" / "adapter_model.safetensors")), load_file(str(b.folder / "adapter_best" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# --- 5. leakage -----------------------------------------------------------------------------------------

def test_leakage_is_reported_in_the_record_and_the_output(tiny_cfg, small_corpus, tmp_path, capsys):
    train = absolute_lines(small_corpus["train"], 12)
    domain = absolute_lines(small_corpus["domain"], 4)
    heldout = absolute_lines(small_corpus["heldout"], 3)
    copied = tmp_path / "copied.wav"
    shutil.copyfile(domain[1]["audio_filepath"], copied)  # the same audio bytes under another name
    train += [
        {**train[0], "text": domain[0]["text"].upper() + "!"},  # a domain sentence (normalized text matches)
        {"audio_filepath": str(copied), "text": "new words for an old clip"},  # a domain clip
        {**train[1], "text": heldout[2]["text"]},  # a heldout sentence
    ]
    cfg = cheap(tiny_cfg, max_steps=1, eval_interval=1, max_eval_utterances=0, test_split=0.0, run_id="leaky",
                train_manifest=str(write_manifest(tmp_path / "train.jsonl", train)),
                domain_manifest=str(write_manifest(tmp_path / "domain.jsonl", domain)),
                heldout_manifest=str(write_manifest(tmp_path / "heldout.jsonl", heldout)))
    result = run(RunConfig(**cfg))
    out = capsys.readouterr().out
    m = json.loads((result.folder / "metrics.json").read_text())
    assert m["status"] == "finished"
    leak = m["leakage"]
    assert {k: leak["domain"][k] for k in ("n", "text", "audio", "leaked")} == {"n": 4, "text": 1, "audio": 1, "leaked": 2}
    assert {k: leak["heldout"][k] for k in ("n", "text", "audio", "leaked")} == {"n": 3, "text": 1, "audio": 0, "leaked": 1}
    assert leak["domain"]["examples"] == [
        {"kind": "text", "eval_id": "domain:1", "train_id": "train:13", "text": domain[0]["text"]},
        {"kind": "audio", "eval_id": "domain:2", "train_id": "train:14", "text": domain[1]["text"]},
    ]
    assert leak["heldout"]["examples"] == [{"kind": "text", "eval_id": "heldout:3", "train_id": "train:15", "text": heldout[2]["text"]}]
    (warning,) = [w for w in m["warnings"] if "LEAKAGE" in w]
    assert warning.startswith("LEAKAGE: domain: 2 of 4 leak from train (1 by text, 1 by audio); heldout: 1 of 3 leak from train")
    for example in ("domain:1 ~ train:13 (text", "domain:2 ~ train:14 (audio", "heldout:3 ~ train:15 (text"):
        assert example in warning
    assert f"WARNING: {warning}" in out  # what the notebook shows


# --- 6. failed runs are recorded -------------------------------------------------------------------------

def test_a_run_failing_midway_is_recorded_and_listed_as_failed(tiny_cfg, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash in evaluation")

    monkeypatch.setattr(train_mod, "evaluate_step", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(RunConfig(**cheap(tiny_cfg, max_steps=2, eval_interval=1), run_id="midway"))
    runs_dir = Path(tiny_cfg["output_dir"])
    m = json.loads((runs_dir / "midway" / "metrics.json").read_text())
    assert m["status"] == "failed" and m["error"] == "RuntimeError: simulated crash in evaluation"
    assert "evaluate_step" in m["traceback"] and m["baseline_wer"] is not None
    assert [r["step"] for r in history(runs_dir / "midway")] == [1]  # the step it got through is kept
    (r,) = load_runs(runs_dir, "midway")
    assert r.status == "failed"
    matrix = run_matrix(load_runs(runs_dir), n_resamples=10)
    (row,) = [row for row in matrix.rows if row["run_id"] == "midway"]
    assert row["status"] == "failed" and row["verdict"] == "n/a (failed)"
    assert "Error: RuntimeError: simulated crash in evaluation" in row["notes"]
    write_matrix(runs_dir)
    line = next(x for x in (runs_dir / "run_matrix.md").read_text().splitlines() if "midway" in x)
    assert "failed" in line


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A scratch copy of the project (notebooks, params), so the notebook run writes nothing in the repo."""
    root = tmp_path / "project"
    for name in ("notebooks", "params"):
        shutil.copytree(ROOT / name, root / name)
    monkeypatch.setenv("LORAKIT_ROOT", str(root))
    monkeypatch.delenv("LORAKIT_SMOKE", raising=False)
    return root


def test_a_failed_notebook_run_keeps_its_notebook_with_the_error(project, tiny_cfg, small_corpus, tmp_path):
    from lorakit.launch.notebooks import execute

    x = np.sin(np.arange(16_000) / 7).astype(np.float32) * 0.1
    x[100] = np.inf
    sf.write(tmp_path / "poison.wav", x, 16_000, subtype="FLOAT")
    rows = absolute_lines(small_corpus["train"], 12) + [{"audio_filepath": str(tmp_path / "poison.wav"), "text": "poison", "duration": 1.0}]
    train = write_manifest(tmp_path / "train.jsonl", rows)
    params = {**cheap(tiny_cfg, max_steps=1, eval_interval=1), "train_manifest": str(train), "output_dir": str(project / "executed")}
    assert execute(params, "nb_fail", quiet=True) == "failed"
    folder = project / "executed" / "nb_fail"
    nb = nbformat.read(folder / "run.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "AudioError"
    assert errors[0]["evalue"].startswith(f"{train}:13: field 'audio_filepath': {tmp_path / 'poison.wav'}: 1 non-finite samples")
    m = json.loads((folder / "metrics.json").read_text())
    assert m["status"] == "failed" and m["error"] == f"AudioError: {errors[0]['evalue']}"
    (row,) = run_matrix(load_runs(project / "executed"), n_resamples=10).rows
    assert row["run_id"] == "nb_fail" and row["status"] == "failed" and "AudioError" in row["notes"]
