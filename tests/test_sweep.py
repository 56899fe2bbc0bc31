"""Sweep files expand into validated runs with readable ids; seed replicates aggregate into mean ± sd
and verdicts. No training here (see test_recipes.py for sweeps that run, and test_analysis_on_sweeps.py
for the analysis on the records real sweeps write); the hand-made rows below are the edge cases that
real runs rarely give: a failed seed, a lone run, a looser criterion, exact hand-checked means."""

from __future__ import annotations

import ast

import json
import statistics
from pathlib import Path

import pytest

from lorakit import RunConfig
from lorakit.cli import recipe_parameters
from lorakit.config import ConfigError
from lorakit.analysis.matrix import seeds_markdown
from lorakit.analysis.stats import aggregate_seeds, seed_verdict
from lorakit.launch.sweep import format_value, load_sweep

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_expands_in_order_with_readable_typed_ids(tmp_path):
    base = write(tmp_path, "lora_r: 8\nnotes: base recipe\n", "base.yaml")
    path = write(tmp_path, f"""
name: lr_dora
base: {base}
fixed: {{max_steps: 100, eval_interval: 50}}
grid:
  lr: [5e-5, 1.0e-4]      # the first is a string to YAML
  use_dora: [false, true]
  seed: [1, 2]
""")
    sweep = load_sweep(path)
    assert [r.run_id for r in sweep.runs] == [
        "lr_dora-lr5e-05-lora-s1", "lr_dora-lr5e-05-lora-s2", "lr_dora-lr5e-05-dora-s1", "lr_dora-lr5e-05-dora-s2",
        "lr_dora-lr1e-04-lora-s1", "lr_dora-lr1e-04-lora-s2", "lr_dora-lr1e-04-dora-s1", "lr_dora-lr1e-04-dora-s2",
    ]
    run = sweep.runs[2]
    assert run.variation == {"lr": 5e-05, "use_dora": True, "seed": 1}
    assert run.params == {"lora_r": 8, "notes": "base recipe", "max_steps": 100, "eval_interval": 50,
                          "lr": 5e-05, "use_dora": True, "seed": 1}
    assert isinstance(run.params["lr"], float)


def test_the_recorded_command_reproduces_the_run(tmp_path, monkeypatch):
    from lorakit.cli import main

    base = write(tmp_path, "lora_r: 8\n", "base.yaml")
    path = write(tmp_path, f"name: x\nbase: {base}\nfixed: {{max_steps: 10, eval_interval: 5}}\nruns: [{{lr: 3e-4, target_modules: [q_proj, v_proj]}}]\n")
    (run,) = load_sweep(path).runs
    assert run.run_id == "x-lr3e-04-target_modulesq_proj_v_proj"
    assert run.command[:3] == ["lorakit", "run", str(base)]
    seen = {}
    monkeypatch.setattr("lorakit.launch.notebooks.execute", lambda params, run_id, **kw: seen.update(params=params, run_id=run_id) or "finished")
    assert main(run.command[1:]) == 0
    assert seen["run_id"] == run.run_id
    assert RunConfig.from_dict(seen["params"]) == RunConfig.from_dict(run.params)


def test_runs_list_and_explicit_run_id(tmp_path):
    path = write(tmp_path, """
name: pick
runs:
  - {lr: 5.0e-5}
  - {lr: 1.0e-4, use_dora: true}
  - {lora_r: 4, run_id: small-rank}
""")
    assert [r.run_id for r in load_sweep(path).runs] == ["pick-lr5e-05", "pick-lr1e-04-dora", "small-rank"]


@pytest.mark.parametrize("text, message", [
    ("grid: {learning_rate: [1.0e-4]}", "learning_rate"),  # unknown parameter, named
    ("grid: {lr: [0.0001, -1.0]}", "'lr'"),  # out of range, in the second combination
    ("grid: {lr: 1.0e-4}", "non-empty list"),
    ("grid: {lr: [1.0e-4]}\nmatrix: {}", "'matrix'"),  # unknown sweep key
    ("name: x\n", "needs a 'grid' or a 'runs'"),
    ("runs: [{lr: 1.0e-4}, {lr: 0.0001}]", "share the id"),
    ("name: a/b\ngrid: {seed: [1]}", "name"),
])
def test_bad_sweeps_fail_before_anything_runs(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_sweep(write(tmp_path, text))


def test_id_parts():
    assert format_value("lr", 5e-5) == "lr5e-05"
    assert format_value("lr", 2.5e-4) == "lr2.5e-04"
    assert format_value("warmup_ratio", 0.1) == "warmup_ratio0.1"
    assert format_value("use_dora", False) == "lora"
    assert format_value("seed", 7) == "s7"
    assert format_value("lora_r", 8) == "r8"
    assert format_value("encoder_cache", False) == "encoder_cachefalse"


@pytest.mark.parametrize("name", ["seeds.yaml", "lr_dora.yaml"])
def test_shipped_sweeps_expand(name):
    spec = (ROOT / "params" / "sweeps" / name).read_text()
    if "params/demo.yaml" in spec and not (ROOT / "params" / "demo.yaml").exists():
        pytest.skip("params/demo.yaml (the demo recipe these sweeps vary) is not in the tree yet")
    sweep = load_sweep(ROOT / "params" / "sweeps" / name)
    ids = [r.run_id for r in sweep.runs]
    assert len(ids) == len(set(ids)) >= 3
    for r in sweep.runs:
        recipe_parameters(r.command[2], {})  # the base recipe loads as `lorakit run` would


# --- seeds -----------------------------------------------------------------------------------------
def row(run_id, seed, base, tuned, hbase, htuned, status="finished", **config):
    cfg = {"lr": 1e-4, "use_dora": False, "seed": seed, "run_id": run_id, "notes": f"seed {seed}",
           "output_dir": "executed", "command": f"lorakit run params/demo.yaml -p seed {seed} -p run_id {run_id}",
           **config}  # the naming fields differ per seed, as in a sweep's records
    return {"run_id": run_id, "seed": seed, "status": status, "baseline_wer": base, "tuned_wer": tuned,
            "heldout_baseline_wer": hbase, "heldout_tuned_wer": htuned, "config": cfg}


def test_aggregate_seeds_mean_sd_and_verdicts():
    rows = [
        row("lora-s1", 1, 0.20, 0.18, 0.10, 0.101),  # -2.0 pt, heldout +0.1: accept
        row("lora-s2", 2, 0.20, 0.185, 0.10, 0.100),  # -1.5 pt: accept
        row("lora-s3", 3, 0.20, 0.195, 0.10, 0.100, output_dir="elsewhere"),  # -0.5 pt: reject; output_dir ignored
        row("dora-s1", 1, 0.20, 0.17, 0.10, 0.100, use_dora=True),
        row("dora-s2", 2, 0.20, 0.18, 0.10, 0.101, use_dora=True),
        row("dora-s3", 3, 0.20, None, 0.10, None, status="failed", use_dora=True),  # not counted
        row("hi-lr-s1", 1, 0.20, 0.10, 0.10, 0.20, lr=1e-3),  # alone: no seed group
    ]
    groups = {g["runs"][0].split("-")[0]: g for g in aggregate_seeds(rows)}
    assert set(groups) == {"lora", "dora"}
    lora, dora = groups["lora"], groups["dora"]
    assert lora["runs"] == ["lora-s1", "lora-s2", "lora-s3"] and lora["seeds"] == [1, 2, 3] and lora["n"] == 3
    assert lora["tuned_wer_mean"] == pytest.approx(statistics.mean([0.18, 0.185, 0.195]))
    assert lora["tuned_wer_sd"] == pytest.approx(statistics.stdev([0.18, 0.185, 0.195]))
    assert lora["baseline_wer_mean"] == pytest.approx(0.20) and lora["baseline_wer_sd"] == pytest.approx(0.0)
    assert lora["heldout_tuned_wer_mean"] == pytest.approx(statistics.mean([0.101, 0.100, 0.100]))
    assert lora["domain_delta_pts_mean"] == pytest.approx(-4.0 / 3)
    assert lora["domain_delta_pts_sd"] == pytest.approx(statistics.stdev([-2.0, -1.5, -0.5]))
    assert lora["verdicts"]["1"] == "accept" and lora["verdicts"]["2"] == "accept"
    assert lora["verdicts"]["3"].startswith("reject (domain gain 0.50 pt < 1")
    assert lora["verdict"] == "reject (1 of 3 seeds rejected)"
    assert dora["n"] == 2 and dora["verdict"] == "accept" and dora["config"]["use_dora"] is True
    assert "seed" not in dora["config"] and "notes" not in dora["config"]
    # looser criteria make every lora seed pass
    (lora_loose,) = [g for g in aggregate_seeds(rows, min_domain_gain_pts=0.5) if g["runs"][0] == "lora-s1"]
    assert lora_loose["verdict"] == "accept"
    table = seeds_markdown(aggregate_seeds(rows))
    assert "0.1867 ± 0.0076" in table and "s3: reject" in table


def test_aggregate_seeds_reads_run_matrix_rows():
    """The rows of `matrix.run_matrix(...)` carry the configuration as a JSON `config_key`."""
    def matrix_row(r):
        config = {k: v for k, v in r.pop("config").items() if k not in ("run_id", "seed")}
        return {**r, "config_key": json.dumps(config, sort_keys=True)}

    rows = [matrix_row(row(f"a-s{s}", s, 0.2, 0.18, 0.1, 0.1)) for s in (1, 2)]
    (group,) = aggregate_seeds(rows)
    assert group["n"] == 2 and group["verdict"] == "accept"


def test_seed_verdict_edges():
    assert seed_verdict({"baseline_wer": 0.2, "tuned_wer": 0.19, "heldout_baseline_wer": 0.1, "heldout_tuned_wer": 0.102}) == "accept"
    assert seed_verdict({"baseline_wer": 0.2, "tuned_wer": 0.18, "heldout_baseline_wer": 0.1,
                         "heldout_tuned_wer": 0.103}).startswith("reject (heldout regression 0.30 pt")
    assert seed_verdict({"baseline_wer": 0.2, "tuned_wer": 0.18}) == "inconclusive (no heldout WER)"
    assert seed_verdict({"baseline_wer": 0.2, "tuned_wer": 0.2}).startswith("reject (domain gain 0.00 pt")


# --- execution plumbing (no training: the runs are faked) ------------------------------------------
def tiny_sweep(tmp_path: Path) -> Path:
    for name in ("train", "domain", "heldout"):
        (tmp_path / f"{name}.jsonl").write_text("")
    return write(tmp_path, f"""
name: t
fixed: {{train_manifest: {tmp_path}/train.jsonl, domain_manifest: {tmp_path}/domain.jsonl,
        heldout_manifest: {tmp_path}/heldout.jsonl, output_dir: {tmp_path}/runs, max_steps: 2, eval_interval: 2}}
grid: {{lr: [1.0e-3, 2.0e-3], seed: [1, 2]}}
""")


def test_finished_runs_are_skipped_without_starting_anything(tmp_path, monkeypatch, capsys):
    from lorakit.launch import pool, sweep as sweep_mod

    path = tiny_sweep(tmp_path)
    runs = load_sweep(path).runs
    for r in runs[:3]:
        (tmp_path / "runs" / r.run_id).mkdir(parents=True)
        (tmp_path / "runs" / r.run_id / "metrics.json").write_text('{"status": "finished"}')
    started = []
    monkeypatch.setattr(sweep_mod, "run_sequential", lambda todo, force, desc: started.extend(todo) or {r.run_id: "finished" for r in todo})
    assert sweep_mod.run_sweep(path, analysis=False) == 0
    assert [r.run_id for r in started] == [runs[3].run_id]
    assert "4 runs, 3 already finished, 1 to run" in capsys.readouterr().out
    started.clear()
    assert sweep_mod.run_sweep(path, analysis=False, force=True) == 0
    assert len(started) == 4  # --force runs every one again


def test_parallel_jobs_split_threads_and_gpus(tmp_path, monkeypatch):
    import threading
    import time

    from lorakit.launch import pool, sweep as sweep_mod

    runs = load_sweep(tiny_sweep(tmp_path)).runs
    seen, lock, active = [], threading.Lock(), []

    def fake_run(cmd, cwd, stdout, stderr, env):
        with lock:
            active.append(env["CUDA_VISIBLE_DEVICES"])
            seen.append((env["CUDA_VISIBLE_DEVICES"], env["OMP_NUM_THREADS"], list(active)))
        time.sleep(0.05)
        with lock:
            active.remove(env["CUDA_VISIBLE_DEVICES"])
        assert cmd[1:4] == ["-m", "lorakit", "run"] and "--quiet" in cmd
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(pool.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(pool.subprocess, "run", fake_run)
    statuses = pool.run_parallel(runs, 2, False, tmp_path / "runs")
    assert set(statuses) == {r.run_id for r in runs}
    assert {threads for _, threads, _ in seen} == {"4"}  # 8 cores / 2 jobs
    assert {gpu for gpu, *_ in seen} == {"0", "1"}
    assert all(len(busy) <= 2 and len(set(busy)) == len(busy) for *_, busy in seen)  # never two runs on one GPU
    assert sorted(p.stem for p in (tmp_path / "runs" / ".sweep-logs").glob("*.log")) == sorted(statuses)


@pytest.mark.parametrize("name, text, expected", [("adapter_scales", "1.0,0.75,0.5", "1.0,0.75,0.5"),
                                                  ("eval_steps", "10,20,40", "10,20,40"),
                                                  ("target_modules", "q_proj,v_proj", "q_proj,v_proj")])
def test_a_comma_list_on_the_command_line_reaches_the_notebook_as_a_list(name, text, expected):
    """`lorakit run -p adapter_scales 1.0,0.75,0.5`: Python reads "1.0,0.75,0.5" as a tuple, which papermill
    injects as the text "(1.0, 0.75, 0.5)"; the value must reach the notebook in a form RunConfig accepts."""
    from papermill.translators import PythonTranslator

    from lorakit.cli import parse_value

    injected = ast.literal_eval(PythonTranslator.translate(parse_value(text)))  # what the parameters cell then holds
    assert getattr(RunConfig.from_dict({name: injected}), name) == expected


def test_a_variant_run_id_is_a_valid_run_id():
    from lorakit.cli import _variant_id, parse_value

    overrides = {"lr": parse_value("5e-5"), "adapter_scales": parse_value("1.0,0.5"), "train_manifest": "data/demo/x.jsonl"}
    run_id = _variant_id("demo", overrides)
    assert run_id == "demo-lr5e-05-adapter_scales1.0_0.5-train_manifestdata_demo_x.jsonl"
    assert RunConfig(run_id=run_id).run_id == run_id  # accepted by the run_id rule
