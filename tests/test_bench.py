"""bench/bench.py in its quick mode: every section runs and reports (the figures mean nothing at this
size; the real ones are in bench/README.md). Benchmarks are not timed tests: nothing here asserts a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_bench_quick_mode_runs_every_section(tmp_path, whisper_dir):
    """On the tiny random Whisper (any model a user names works the same way; `make bench` uses the
    bundled one): what is checked is that every section runs, not how fast."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--model", str(whisper_dir), "--max-new-tokens", "12",
                           "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"train-hf", "train-lorakit", "train-nocache", "train-full", "train-distill", "eval-batch1",
                            "eval-lorakit", "baseline-cache", "profile"}
    steps = report["settings"]["steps"]
    assert len(results["train-hf"]["losses"]) == steps and len(results["train-lorakit"]["losses"]) == 2 * steps
    assert all(0 < x < 100 for x in results["train-hf"]["losses"] + results["train-lorakit"]["losses"])
    # frozen encoder, cache on or off: the same loss curve
    assert report["ratios"]["frozen_vs_nocache_max_rel_loss_diff"] < 1e-4
    # self-distillation's cost: each mode timed over the same steps; the KL logged only where distillation is on
    distill = results["train-distill"]
    assert all(distill[m]["steps"] == 2 * steps and distill[m]["s_per_step"] > 0 for m in ("off", "replay", "all"))
    # at the first step the adapter is the base (LoRA's B starts at zero): KL 0 up to float rounding (CI saw -1.4e-8)
    assert set(distill["off"]["distill_kl"]) == {None} and distill["replay"]["distill_kl"][0] >= -1e-6
    assert {"distill_replay_vs_off", "distill_all_vs_off"} <= set(report["ratios"])
    assert all(results["baseline-cache"]["changed_key_misses"].values())
    assert results["baseline-cache"]["hit_seconds"] < results["baseline-cache"]["miss_seconds"]
    n = results["eval-batch1"]["n"]
    assert len(results["eval-lorakit"]["frozen_warm"]["hyps"]) == n
    assert {"train_step_nocache", "train_step_frozen", "eval_batch_nocache", "eval_batch_frozen"} <= set(results["profile"])
    assert "x HF" in proc.stdout  # the summary table was printed
