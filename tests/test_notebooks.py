"""The train notebook through papermill, literally as a user types it (smoke profile, real bundled
model, real demo corpus), in a scratch copy of the project so the repo's executed/ stays clean."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAPERMILL = str(Path(sys.executable).with_name("papermill"))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    from lorakit.demo.corpus import build_corpus

    build_corpus(ROOT / "data" / "demo")  # no-op when `make` already built it
    root = tmp_path_factory.mktemp("project")
    for name in ("notebooks", "params"):
        shutil.copytree(ROOT / name, root / name)
    (root / "data").mkdir()
    (root / "data" / "demo").symlink_to(ROOT / "data" / "demo", target_is_directory=True)
    (root / "executed").mkdir()
    return root


def papermill(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LORAKIT_ROOT": str(root), "LORAKIT_SMOKE": "1"}
    return subprocess.run([PAPERMILL, *args], cwd=root, env=env, capture_output=True, text=True, timeout=900)


def _records(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / "executed").glob("*/metrics.json"))


def test_papermill_p_lr(project):
    before = set(_records(project))
    proc = papermill(project, "notebooks/train.ipynb", "executed/run.ipynb", "-p", "lr", "5e-5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # papermill shows no cell output: the run's progress lines reach its terminal (display.progress_to_kernel_terminal)
    for line in (r"train: +100% \d+/\d+", r"eval domain @ \d+: ", r"step \d+: domain WER \d\.\d{4}", r"baseline domain: WER "):
        assert re.search("^" + line, proc.stderr, re.M), (line, proc.stderr[-3000:])
    assert (project / "executed" / "run.ipynb").exists()
    (new,) = set(_records(project)) - before
    metrics = json.loads((new / "metrics.json").read_text())
    config = json.loads((new / "config.json").read_text())
    assert metrics["status"] == "finished" and "smoke" in metrics["notes"]
    assert config["config"]["lr"] == 5e-5 and metrics["lr"] == 5e-5
    assert "-p lr 5e-05" in metrics["command"] or "-p lr 5e-5" in metrics["command"]
    assert (new / "adapter_best" / "adapter_model.safetensors").exists()
    assert (new / "checkpoint_last" / "training_state.pt").exists()
    for name in ("history.jsonl", "predictions/domain_best.jsonl", "predictions/heldout_best.jsonl", "predictions/domain_baseline.jsonl"):
        assert (new / name).exists(), name


def test_papermill_f_recipe(project):
    before = set(_records(project))
    proc = papermill(project, "notebooks/train.ipynb", "executed/x.ipynb", "-f", "params/exp_2_1_dora_base.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (new,) = set(_records(project)) - before
    config = json.loads((new / "config.json").read_text())["config"]
    assert config["use_dora"] is True and config["lr"] == 5e-5
    assert json.loads((new / "metrics.json").read_text())["status"] == "finished"


def test_papermill_unknown_parameter_fails_naming_it(project):
    before = set(_records(project))
    proc = papermill(project, "notebooks/train.ipynb", "executed/bad.ipynb", "-p", "learning_rate", "5e-5")
    assert proc.returncode != 0
    assert "learning_rate" in proc.stderr
    nb = nbformat.read(project / "executed" / "bad.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "ConfigError" and "learning_rate" in errors[0]["evalue"]
    assert set(_records(project)) == before  # failed before any run folder (or model) existed


def test_papermill_p_target_modules_q_proj_v_proj_on_the_tiny_whisper(project, whisper_dir):
    """peft's own Whisper targets, typed as a user would: they match encoder and decoder alike, so the
    run trains without the encoder cache (it used to stop: 'encoder cache enabled but the encoder has
    trainable parameters')."""
    before = set(_records(project))
    proc = papermill(project, "notebooks/train.ipynb", "executed/qv.ipynb", "-p", "target_modules", "q_proj,v_proj",
                     "-p", "model", str(whisper_dir), "-p", "max_new_tokens", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (new,) = set(_records(project)) - before
    metrics = json.loads((new / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["target_modules"] == 12  # q and v of 2 encoder + 2x2 decoder attentions
    assert metrics["encoder_cache_hits"] == metrics["encoder_cache_misses"] == 0
    adapter = json.loads((new / "adapter_best" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "v_proj"}


@pytest.mark.slow
def test_papermill_p_target_modules_q_proj_v_proj_on_the_bundled_tiny_en(project):
    """The same targets on the real default model (smoke size): 24 layers, encoder included, so the run
    trains and evaluates without the encoder cache, and the adapter it keeps holds encoder weights."""
    from safetensors import safe_open

    before = set(_records(project))
    proc = papermill(project, "notebooks/train.ipynb", "executed/qv_tiny_en.ipynb", "-p", "target_modules", "q_proj,v_proj",
                     "-p", "max_new_tokens", "32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (new,) = set(_records(project)) - before
    metrics = json.loads((new / "metrics.json").read_text())
    config = json.loads((new / "config.json").read_text())["config"]
    assert config["model"] == "bundled:whisper-tiny.en" and config["target_modules"] == "q_proj,v_proj"
    assert metrics["status"] == "finished" and "smoke" in metrics["notes"]
    assert metrics["target_modules"] == 24  # q and v of 4 encoder self-attentions + 4 decoder self- and cross-attentions
    assert metrics["encoder_cache_hits"] == metrics["encoder_cache_misses"] == 0
    with safe_open(str(new / "adapter_best" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(".encoder.layers." in k for k in keys) and any(".decoder.layers." in k and "encoder_attn" in k for k in keys)
    assert (new / "predictions" / "domain_best.jsonl").exists()


def test_execute_refuses_a_changed_recipe_for_a_recorded_run_id_and_force_starts_afresh(tiny_cfg, capsys, monkeypatch):
    """`lorakit run` / sweeps go through `execute`: a run id recorded with another recipe is refused before
    a kernel starts (its record and notebook untouched); force=True deletes it and runs the new recipe."""
    from helpers import cheap
    from lorakit import RunConfig
    from lorakit.experiment.train import run
    from lorakit.launch.notebooks import execute

    monkeypatch.delenv("LORAKIT_SMOKE", raising=False)  # `make test` sets it; these are the real settings (the kernel's too)
    params = cheap(tiny_cfg, max_new_tokens=4)
    folder = run(RunConfig(**params, run_id="recipe")).folder
    (folder / "run.ipynb").write_text("the first run's notebook")
    changed = {**params, "lr": 5e-4}
    assert execute(changed, "recipe", command="test") == "refused"
    assert "lr: 0.001 -> 0.0005" in capsys.readouterr().err
    assert (folder / "run.ipynb").read_text() == "the first run's notebook"
    assert json.loads((folder / "config.json").read_text())["config"]["lr"] == 1e-3
    assert execute(changed, "recipe", command="test", force=True, quiet=True) == "finished"
    assert json.loads((folder / "config.json").read_text())["config"]["lr"] == 5e-4
    assert nbformat.read(folder / "run.ipynb", as_version=4).cells


def test_a_run_id_another_process_is_executing_is_refused_even_with_force_and_runs_once_it_ends(tiny_cfg, tmp_path, capsys, monkeypatch):
    """Two executions of one run id would write one history (a search once handed one trial to two
    workers: its curve plot then met two evaluations at its best step). The second is refused before a
    kernel starts, --force included, and the folder is left as it is; the lock dies with its process."""
    from helpers import cheap
    from lorakit.launch.notebooks import execute

    monkeypatch.delenv("LORAKIT_SMOKE", raising=False)
    params = {**cheap(tiny_cfg, max_steps=1, eval_interval=1, max_new_tokens=4), "output_dir": str(tmp_path / "executed")}
    folder = tmp_path / "executed" / "busy"
    folder.mkdir(parents=True)
    (folder / "history.jsonl").write_text('{"kind": "train", "step": 1}\n')
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", str(folder)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for force in (False, True):
            assert execute(params, "busy", command="test", force=force, quiet=True) == "refused"
            assert "busy: refused: another process is running it in" in capsys.readouterr().err
        assert [p.name for p in folder.iterdir()] == ["history.jsonl"]  # untouched: no notebook, no --force wipe
    finally:
        holder.kill()
        holder.wait()
    assert execute(params, "busy", command="test", force=True, quiet=True) == "finished"
    assert (folder / "run.ipynb").is_file() and '"kind": "eval"' in (folder / "history.jsonl").read_text()
