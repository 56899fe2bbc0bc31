"""Recipes at scale, end to end on the tiny Whisper in a scratch copy of the project: `lorakit run`
survives kill -9 and resumes, finished runs are skipped, a 2x2 sweep runs sequentially, with --jobs 2
and on a local Ray instance, and a 2-process CPU data-parallel run writes one run record."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import project_env

ROOT = Path(__file__).resolve().parent.parent
LORAKIT = [sys.executable, "-m", "lorakit"]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))


@pytest.fixture(scope="module")
def project(tmp_path_factory, whisper_dir, small_corpus) -> Path:
    """A scratch project: the repo's notebooks and params plus params/tiny.yaml (seconds-long runs)."""
    root = tmp_path_factory.mktemp("recipes")
    for name in ("notebooks", "params"):
        shutil.copytree(ROOT / name, root / name)
    (root / "executed").mkdir()
    tiny = {
        "model": str(whisper_dir), "train_manifest": str(small_corpus["train"]), "domain_manifest": str(small_corpus["domain"]),
        "heldout_manifest": str(small_corpus["heldout"]), "replay_manifest": str(small_corpus["replay"]), "max_steps": 2, "eval_interval": 2, "batch_size": 2,
        "eval_batch_size": 2, "max_new_tokens": 4, "min_train_clips": 4, "max_train_utterances": 8, "max_eval_utterances": 2,
        "log_interval": 1, "warmup_ratio": 0.0, "lr": 1.0e-3, "target_modules": "decoder",
    }
    (root / "params" / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    return root


def lorakit(root: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*LORAKIT, *args], cwd=root, env=project_env(root), capture_output=True, text=True, timeout=timeout)


def history(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def steps(folder: Path, kind: str) -> list[int]:
    """Steps of the training log or of the evaluations during training (not the best adapter's alpha grid)."""
    return [r["step"] for r in history(folder) if r["kind"] == kind and "alpha" not in r]


# --- lorakit run: kill -9, resume, skip ------------------------------------------------------------
def test_kill_9_mid_training_then_run_again_resumes(project, tmp_path):
    args = ["run", "params/tiny.yaml", "-p", "max_steps", "8", "-p", "run_id", "killed", "--quiet"]
    folder = project / "executed" / "killed"
    log = tmp_path / "first.log"
    with open(log, "w") as fh:
        # papermill's kernel is a child process: a session of its own lets us kill the whole group
        proc = subprocess.Popen([*LORAKIT, *args], cwd=project, env=project_env(project), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    try:
        # kill once a checkpoint exists and training has gone past it (rows after the checkpoint must be redone)
        while True:
            assert proc.poll() is None, f"the run ended before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"no checkpoint_last after 600 s:\n{log.read_text()[-3000:]}"
            if (folder / "checkpoint_last" / "training_state.pt").exists() and max(steps(folder, "train"), default=0) >= 3:
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = max(steps(folder, "train"))
    assert metrics(folder)["status"] == "running"  # kill -9: nothing got to write "failed"
    assert killed_at < 8

    again = lorakit(project, *args)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "resuming an unfinished run (running)" in again.stdout
    assert "resuming from" in (folder / "run.ipynb").read_text()
    m = metrics(folder)
    assert m["status"] == "finished" and m["steps"] == 8 and m["max_steps"] == 8
    assert steps(folder, "train") == list(range(1, 9)), f"killed after step {killed_at}"  # none duplicated, none missing
    assert steps(folder, "eval") == [2, 4, 6, 8]
    assert json.loads((folder / "checkpoint_last" / "meta.json").read_text())["step"] == 8

    # a finished run is not run again
    before = (folder / "metrics.json").read_bytes()
    once_more = lorakit(project, *args)
    assert once_more.returncode == 0 and "already finished" in once_more.stdout
    assert (folder / "metrics.json").read_bytes() == before


# --- sweeps ----------------------------------------------------------------------------------------
GRID = "base: params/tiny.yaml\ngrid:\n  lr: [1.0e-3, 2.0e-3]\n  seed: [1, 2]\n"


def write_sweep(project: Path, name: str) -> Path:
    path = project / "params" / "sweeps" / f"{name}.yaml"
    path.write_text(f"name: {name}\n{GRID}")
    return path


def sweep_ids(name: str) -> list[str]:
    return [f"{name}-lr{lr}-s{seed}" for lr in ("0.001", "0.002") for seed in (1, 2)]


def assert_finished(project: Path, ids: list[str]) -> None:
    for run_id in ids:
        folder = project / "executed" / run_id
        m = metrics(folder)
        assert m["status"] == "finished" and m["steps"] == 2, (run_id, m.get("error"))
        assert steps(folder, "train") == [1, 2]
        config = json.loads((folder / "config.json").read_text())["config"]
        assert config["run_id"] == run_id and f"-s{config['seed']}" in run_id
        assert f"-p run_id {run_id}" in m["command"] and m["command"].startswith("lorakit run params/tiny.yaml")


def test_sweep_2x2_sequential_with_analysis_then_skips_finished_runs(project):
    path = write_sweep(project, "grid_seq")
    ids = sweep_ids("grid_seq")
    first = lorakit(project, "sweep", str(path))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert_finished(project, ids)
    assert "0 already finished, 4 to run" in first.stdout and "sweep grid_seq: run 4 of 4: " in first.stdout
    assert all(f"| {i} |" in first.stdout for i in ids)  # the summary table
    analysis = project / "executed" / "analysis-grid_seq.ipynb"
    assert analysis.exists() and "grid_seq-lr0.001-s1" in analysis.read_text()

    stamps = {i: (project / "executed" / i / "metrics.json").stat().st_mtime_ns for i in ids}
    again = lorakit(project, "sweep", str(path), "--no-analysis")
    assert again.returncode == 0 and "4 already finished, 0 to run" in again.stdout, again.stdout[-2000:]
    assert {i: (project / "executed" / i / "metrics.json").stat().st_mtime_ns for i in ids} == stamps
    # (a sweep with some runs finished runs only the others: test_sweep.py, with faked runs)


def test_sweep_2x2_with_two_jobs(project):
    path = write_sweep(project, "grid_jobs")
    result = lorakit(project, "sweep", str(path), "--jobs", "2", "--no-analysis")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_finished(project, sweep_ids("grid_jobs"))
    assert re.search(r"sweep grid_jobs: 100%\|[^\r\n]*\| 4/4 \[", result.stderr), result.stderr[-2000:]  # the bar of finished runs
    assert sorted(p.stem for p in (project / "executed" / ".sweep-logs").glob("grid_jobs-*.log")) == sorted(sweep_ids("grid_jobs"))


def test_sweep_2x2_on_local_ray(project, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is the optional extra lorakit[ray]")
    from lorakit.launch.sweep import run_sweep

    path = write_sweep(project, "grid_ray")
    for key, value in project_env(project).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LORAKIT_SMOKE", raising=False)
    start_local_ray(ray)
    try:
        assert ray.cluster_resources().get("GPU", 0) == 0  # each task then asks for num_gpus=0
        assert run_sweep(path, ray_address="auto", analysis=False) == 0
    finally:
        ray.shutdown()
    assert_finished(project, sweep_ids("grid_ray"))


def start_local_ray(ray) -> None:
    """ray.init(num_cpus=2), tried up to three times: Ray waits a fixed 30 s for its raylet to register,
    which a CI machine whose 2 cores are busy can miss."""
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise


# --- data-parallel ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_cpu_data_parallel_writes_one_run_record(project):
    """`accelerate launch` on CPU (gloo): both ranks train and evaluate, rank 0 alone writes the record."""
    before = {p.name for p in (project / "executed").iterdir()}
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "lorakit", "run", "params/tiny.yaml", "-p", "run_id", "ddp", "--quiet"]
    proc = subprocess.run(cmd, cwd=project, env=project_env(project), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert {p.name for p in (project / "executed").iterdir()} - before == {"ddp"}  # one record, nothing else
    folder = project / "executed" / "ddp"
    m = metrics(folder)
    assert m["status"] == "finished" and m["steps"] == 2
    assert steps(folder, "train") == [1, 2] and steps(folder, "eval") == [2]  # rank 1 wrote no rows
    record = json.loads((folder / "config.json").read_text())
    assert record["processes"] == 2 and record["device"].startswith("cpu")
    for split in ("domain", "heldout"):  # every utterance evaluated once, gathered from both ranks
        rows = [json.loads(x) for x in (folder / "predictions" / f"{split}_best.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and len({r["id"] for r in rows}) == 2
    assert sorted(p.name for p in folder.glob("*.ipynb")) == ["run.ipynb"]
