"""`lorakit search`: search files are checked before anything runs; the objective, the guardrail
constraint and pruning go through a real Optuna study (first with runs that only write a record, then
with real papermill runs on the tiny Whisper); an interrupted study resumes its killed trial's run and
ends with the asked number of trials; two workers share one SQLite study."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import project_env

optuna = pytest.importorskip("optuna", reason="lorakit search needs the optional extra lorakit[search]")
from optuna.trial import TrialState  # noqa: E402

from lorakit.analysis.study_report import best_feasible, open_study as read_study, study_markdown  # noqa: E402
from lorakit.config import ConfigError  # noqa: E402
from lorakit.launch.search import finished_trials, load_search, open_study, trial_outcome, worker  # noqa: E402
from lorakit.files import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LORAKIT = [sys.executable, "-m", "lorakit"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the search file ------------------------------------------------------------------------------
def test_a_search_file_loads_typed_values_on_top_of_its_recipe(tmp_path):
    base = write(tmp_path / "base.yaml", "lora_r: 8\nmax_steps: 40\n")
    path = write(tmp_path / "demo.yaml", f"""
base: {base}
fixed: {{eval_interval: 10}}
space:
  lr: {{float: [1e-4, 3.0e-3], log: true}}     # "1e-4" is a string to YAML
  max_steps: {{int: [20, 60], step: 20}}
  use_dora: {{categorical: [false, true]}}
enqueue: [{{lr: 1.0e-3, max_steps: 40, use_dora: false}}]
""")
    search = load_search(path)
    assert search.name == "demo" and search.trials == 10
    assert search.params({"lr": 5e-4}) == {"lora_r": 8, "max_steps": 40, "eval_interval": 10, "lr": 5e-4}
    assert search.default_storage().endswith("/executed/search-demo.db") and search.default_storage().startswith("sqlite:////")


@pytest.mark.parametrize("text, message", [
    ("space: {learning_rate: {float: [0.1, 0.2]}}", "learning_rate"),
    ("space: {run_id: {categorical: [a, b]}}", "not a run parameter"),
    ("space: {lr: {uniform: [0.1, 0.2]}}", "one of"),
    ("space: {lr: {float: [0.2, 0.1]}}", "below high"),
    ("space: {lr: {float: [0.1, 0.2], base: 2}}", "base"),
    ("space: {lr: {float: [-1.0, 0.1]}}", "'lr'"),  # the low end is not a valid run
    ("space: {lr: {categorical: [0.1]}}\nenqueue: [{lora_r: 4}]", "enqueue"),
    ("space: {lr: {categorical: [0.1]}}\npruner: {MedianPrunr: {}}", "pruner"),
    ("space: {lr: {categorical: [0.1]}}\npruner: {MedianPruner: {n_startup: 1}}", "n_startup"),
    ("space: {lr: {categorical: [0.1]}}\nsampler: {TPESampler: {sed: 0}}", "sampler"),
    ("space: {lr: {categorical: [0.1]}}\ntrials: 0", "trials"),
    ("space: {lr: {categorical: [0.1]}}\ngrid: {}", "'grid'"),
    ("fixed: {lr: 0.1}", "space"),
])
def test_bad_search_files_fail_before_anything_runs(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_search(write(tmp_path / "bad.yaml", text))


def test_the_objective_comes_from_the_dev_block_when_the_record_has_one():
    plain = {"tuned_wer": 0.30, "heldout_baseline_wer": 0.100, "heldout_tuned_wer": 0.103}
    assert trial_outcome(plain) == (0.30, pytest.approx(0.3))
    with_dev = {**plain, "dev": {"tuned_wer": 0.25, "heldout_baseline_wer": 0.10, "heldout_tuned_wer": 0.10}}
    assert trial_outcome(with_dev) == (0.25, 0.0)
    assert trial_outcome({"tuned_wer": 0.3})[1] is None  # no heldout set: no regression to constrain


# --- the study, with runs that only write their record ----------------------------------------------
OUTCOMES = {  # lr -> (domain WER, heldout WER after; baseline 0.10, guardrail 0.2 pt), stop reason
    0.01: (0.50, 0.12, "max_steps"),  # the lowest domain WER, but 2 pt of heldout regression: infeasible
    0.02: (0.60, 0.101, "max_steps"),  # the best within the guardrail
    0.03: (0.90, 0.10, "pruned"),
    0.04: (0.70, 0.10, "max_steps"),
}


def recorded_run(out_dir: Path):
    """A launcher that writes the record a finished run would, from OUTCOMES (the objective reads only the record)."""
    def launch(run) -> str:
        domain, heldout, stop = OUTCOMES[run.params["lr"]]
        write_json(out_dir / run.run_id / "metrics.json", {
            "run_id": run.run_id, "status": "finished", "stop_reason": stop, "steps": 2 if stop == "pruned" else 4,
            "baseline_wer": 1.0, "tuned_wer": domain, "heldout_baseline_wer": 0.10, "heldout_tuned_wer": heldout})
        return "finished"
    return launch


def test_the_best_trial_is_the_best_within_the_guardrail_and_pruned_runs_are_pruned_trials(tmp_path):
    path = write(tmp_path / "s.yaml", f"""
fixed: {{output_dir: {tmp_path / 'runs'}}}
space: {{lr: {{categorical: [0.01, 0.02, 0.03, 0.04]}}}}
enqueue: [{{lr: 0.01}}, {{lr: 0.02}}, {{lr: 0.03}}, {{lr: 0.04}}]
""")
    search = load_search(path)
    url = search.default_storage()
    (tmp_path / "runs").mkdir()
    study = open_study(search, url)
    worker(study, search, 4, recorded_run(tmp_path / "runs"), url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert [t.user_attrs["run_id"] for t in trials] == ["s-t0", "s-t1", "s-t2", "s-t3"]
    assert trials[0].constraints["heldout_regression"] == pytest.approx(2.0 - 0.2)  # infeasible
    best = best_feasible(read_study(url, "s"))
    assert best.number == 1 and best.value == 0.60  # not trial 0, whose domain WER is lower
    table = study_markdown(read_study(url, "s"))
    assert "| 1 | s-t1 | complete | lr=0.02 | 0.6000 | +0.10 | yes | ★ |" in table
    assert "| 0 | s-t0 | complete | lr=0.01 | 0.5000 | +2.00 | no |  |" in table and "| pruned |" in table
    # asked again for 4 trials, the study has them: nothing runs; asked for 5, one more runs
    worker(study, search, 4, recorded_run(tmp_path / "runs"), url)
    assert len(study.get_trials()) == 4
    worker(study, search, 5, recorded_run(tmp_path / "runs"), url)
    assert finished_trials(study) == 5


def test_a_study_searching_another_space_is_refused(tmp_path):
    path = write(tmp_path / "s.yaml", f"fixed: {{output_dir: {tmp_path}}}\nspace: {{lr: {{categorical: [0.01, 0.02]}}}}\n")
    open_study(load_search(path), load_search(path).default_storage())
    write(path, f"fixed: {{output_dir: {tmp_path}}}\nspace: {{lr: {{categorical: [0.01, 0.03]}}}}\n")
    with pytest.raises(ConfigError, match="searches another space"):
        open_study(load_search(path), load_search(path).default_storage())


def test_each_queued_trial_goes_to_one_worker_only(tmp_path):
    """Workers share one SQLite study (threads of one `lorakit search`, as with --jobs and --ray). SQLite
    ignores the SELECT ... FOR UPDATE with which Optuna hands a queued trial to one worker, so without
    lorakit's BEGIN IMMEDIATE two workers took the same trial (10 of 40 hand-outs were duplicates when
    measured) and ran one run id twice at once."""
    import threading
    from collections import Counter

    n = 16
    enqueue = ", ".join(f"{{lr: {0.02 if i % 2 else 0.04}}}" for i in range(n))
    path = write(tmp_path / "s.yaml", f"fixed: {{output_dir: {tmp_path / 'runs'}}}\nspace: {{lr: {{categorical: [0.02, 0.04]}}}}\n"
                                      f"enqueue: [{enqueue}]\n")
    search = load_search(path)
    url = search.default_storage()
    (tmp_path / "runs").mkdir()
    study = open_study(search, url)
    launched, record, lock = [], recorded_run(tmp_path / "runs"), threading.Lock()

    def launch(run) -> str:
        with lock:
            launched.append(run.run_id)
        return record(run)

    threads = [threading.Thread(target=worker, args=(study, search, n, launch, url)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(launched) == Counter(f"s-t{i}" for i in range(n))  # each trial's run launched once
    assert finished_trials(study) == n


# --- real runs: papermill on the tiny Whisper -------------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory, whisper_dir, small_corpus) -> Path:
    """A scratch project with params/tiny.yaml: seconds-long runs whose WERs differ with the LR
    (1e-8 leaves the model as it was; 0.03 and 0.1 make it emit words, 0.3 silences it again)."""
    root = tmp_path_factory.mktemp("search")
    for name in ("notebooks", "params"):
        shutil.copytree(ROOT / name, root / name)
    (root / "executed").mkdir()
    tiny = {
        "model": str(whisper_dir), "train_manifest": str(small_corpus["train"]), "domain_manifest": str(small_corpus["domain"]),
        "heldout_manifest": str(small_corpus["heldout"]), "max_steps": 4, "eval_interval": 2, "batch_size": 2,
        "eval_batch_size": 4, "max_new_tokens": 24, "min_train_clips": 4, "max_train_utterances": 8, "max_eval_utterances": 4,
        "log_interval": 1, "warmup_ratio": 0.0, "target_modules": "decoder", "verify_best": 0,
        "replay_ratio": 0.0, "adapter_scales": "1.0",  # trials as small as they go: no replay set here, no alpha grid
    }
    (root / "params" / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    return root


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


STUDY = """name: {name}
base: params/tiny.yaml
trials: 4
space:
  lr: {{categorical: [1.0e-8, 0.03, 0.1, 0.3]}}
  max_steps: {{categorical: [4, 8]}}
{enqueue}pruner: {{MedianPruner: {{n_startup_trials: 1, n_warmup_steps: 0}}}}
heartbeat_s: 2
"""
ENQUEUE = """enqueue:
  - {lr: 0.03, max_steps: 4}     # infeasible: heldout WER rises ~100 pt
  - {lr: 1.0e-8, max_steps: 4}   # the model as it was: within the guardrail
  - {lr: 0.1, max_steps: 4}      # worse than the median at step 2: pruned
  - {lr: 0.3, max_steps: 8}      # killed mid-run, then resumed
"""


def test_a_killed_study_resumes_its_killed_run_and_ends_with_4_trials(project, tmp_path):
    path = write(project / "params" / "search" / "s.yaml", STUDY.format(name="s", enqueue=ENQUEUE))
    log = tmp_path / "first.log"
    last = project / "executed" / "s-t3"
    with open(log, "w") as fh:
        proc = subprocess.Popen([*LORAKIT, "search", str(path), "--no-analysis"], cwd=project, env=project_env(project),
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 3000
    try:  # kill the search (and the trial's kernel) once the last trial has a checkpoint and is still training
        while not ((last / "checkpoint_last" / "training_state.pt").exists() and metrics(last)["status"] == "running"):
            assert proc.poll() is None, f"the search ended before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    again = subprocess.run([*LORAKIT, "search", str(path)], cwd=project, env=project_env(project), capture_output=True,
                           text=True, timeout=3000)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "3 of 4 trials finished" in again.stdout and "4 of 4 trials finished" in again.stdout

    study = optuna.load_study(study_name="s", storage=f"sqlite:///{project / 'executed' / 'search-s.db'}")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                         TrialState.COMPLETE]  # trial 3 died with its worker; trial 4 is its retry
    assert trials[4].params == trials[3].params and trials[4].user_attrs["run_id"] == "s-t3"
    assert "resuming from" in (last / "run.ipynb").read_text()
    train_steps = [json.loads(x)["step"] for x in (last / "history.jsonl").read_text().splitlines() if '"train"' in x]
    assert train_steps == list(range(1, 9)) and metrics(last)["status"] == "finished"  # none repeated, none missing
    pruned = metrics(project / "executed" / "s-t2")
    assert pruned["stop_reason"] == "pruned" and pruned["steps"] == 2 and pruned["status"] == "finished"
    assert trials[0].constraints["heldout_regression"] > 0  # infeasible
    assert study.best_trial.number in (1, 4) and study.best_trial.constraints["heldout_regression"] <= 0
    # every trial is an ordinary run: a row of the matrix; the study's figures from the analysis notebook
    matrix = (project / "executed" / "run_matrix.md").read_text()
    assert all(f"| s-t{i} |" in matrix for i in range(4)) and "pruned" in matrix
    figures = project / "executed" / "figures-search-s"
    assert (figures / "search-s-history.png").exists() and (figures / "search-s-intermediate.png").exists()
    assert "best trial within the guardrail" in again.stdout
    # the resumed run's progress reached the terminal: its log lines, its bars, its result row
    assert "resuming from" in again.stdout and "step 8: domain WER" in again.stdout
    assert "train: 100%" in again.stderr and "| s-t3 | finished | 8 | max_steps |" in again.stdout


def test_two_workers_share_one_sqlite_study(project):
    """Two `lorakit search` processes on one SQLite file: each runs a trial, the study ends with exactly 2."""
    path = write(project / "params" / "search" / "w.yaml", STUDY.format(name="w", enqueue="").replace("heartbeat_s: 2", "heartbeat_s: 5"))
    cmd = [*LORAKIT, "search", str(path), "--trials", "2", "--no-analysis"]
    workers = [subprocess.Popen(cmd, cwd=project, env=project_env(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True) for _ in range(2)]
    try:
        outputs = [w.communicate(timeout=3000)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{project / 'executed' / 'search-w.db'}")
    finished = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 2
    run_ids = [t.user_attrs["run_id"] for t in finished]
    assert len(set(run_ids)) == 2 and all(metrics(project / "executed" / r)["status"] == "finished" for r in run_ids)
    ran = [{r for r in run_ids if f"Trial {r.split('-t')[1]} " in out} for out in outputs]
    assert all(ran) and not ran[0] & ran[1], ran  # both workers ran a trial, none ran the other's


RAY_STUDY = """name: r
base: params/tiny.yaml
trials: 2
space: {lr: {categorical: [1.0e-8, 0.03]}}
enqueue: [{lr: 1.0e-8}, {lr: 0.03}]
pruner: {MedianPruner: {n_startup_trials: 2}}   # asked at every evaluation; with 2 trials it never prunes
heartbeat_s: 5
"""


def test_a_search_on_local_ray_runs_each_trial_as_a_ray_task_that_reports_to_the_study(project):
    """`--ray local`: the study is driven from the calling process, each trial's run is a Ray task (2 at a
    time on 2 CPUs), and each run reports its evaluations to the study's SQLite file itself (what pruning reads)."""
    pytest.importorskip("ray", reason="Ray is the optional extra lorakit[ray]")
    path = write(project / "params" / "search" / "r.yaml", RAY_STUDY)
    proc = subprocess.run([*LORAKIT, "search", str(path), "--ray", "local", "--no-analysis"], cwd=project,
                          env=project_env(project), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "search r: Ray (local)" in proc.stdout and "2 of 2 trials finished" in proc.stdout
    assert "r-t0: finished" in proc.stdout and "r-t1: finished" in proc.stdout  # the Ray launcher's status lines
    assert "search r: trial 0 (r-t0) starts, 0 of 2 finished" in proc.stdout
    assert re.search(r"search r: 100%\|[^\r\n]*\| 2/2 \[", proc.stderr), proc.stderr[-2000:]  # the bar of finished trials
    trials = optuna.load_study(study_name="r", storage=f"sqlite:///{project / 'executed' / 'search-r.db'}").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    for t in trials:
        m = metrics(project / "executed" / t.user_attrs["run_id"])
        assert m["status"] == "finished" and m["steps"] == 4 and t.value == (m.get("dev") or m)["tuned_wer"]  # chosen on dev
        assert sorted(t.intermediate_values) == [2, 4]  # reported from the Ray task's run at each evaluation
    assert not (project / "executed" / ".search-logs").exists()  # no local job slots were used


def test_jobs_and_ray_together_are_refused_before_anything_runs(tmp_path, capsys):
    from lorakit.cli import main

    with pytest.raises(SystemExit) as done:  # argparse's exclusive group, before the file is even read
        main(["search", str(tmp_path / "none.yaml"), "--jobs", "2", "--ray", "local"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "argument --ray: not allowed with argument --jobs" in err and len(err.strip().splitlines()) == 1


def test_the_shipped_demo_search_loads():
    search = load_search(ROOT / "params" / "search" / "demo.yaml")
    assert search.base == "params/demo.yaml" and search.enqueue and set(search.enqueue[0]) == set(search.space)
