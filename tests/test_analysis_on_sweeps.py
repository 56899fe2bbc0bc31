"""The analysis on records the kit really wrote (issue 26, item 9): `lorakit sweep params/sweeps/seeds.yaml`
and a two-value sweep, executed once per module through the real CLI in the smoke profile, into a scratch
copy of the project. Real records store what hand-built fixtures did not (a `command` and a `run_id` that
differ per seed, `notes` with "[smoke profile]", every parameter of the day): the seed table once found
0 groups on them while the fixtures passed.

The shipped sweep files and the shipped demo recipe run as they are, with one change in the scratch copy's
params/demo.yaml: the model is the tiny random Whisper (tests/tiny.py) and generation stops at 8 tokens.
The bundled tiny.en's smoke run costs ~5 CPU-minutes per run on this 2-core machine (measured under load),
so four of them would be the suite's longest test; the analysis only reads what the records hold, and that
is the same whatever the model. The two-value sweep (lr 1e-3 against 3e-4 at seed 1) lists `seeds-s1` by
id, so `lorakit sweep` skips it as finished and one new run makes the pair: four runs in all.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lorakit.analysis import plots, runs, stats
from lorakit.analysis.matrix import run_matrix, seeds_markdown
from lorakit.record import SPLIT_KEYS, delta_pts

pytestmark = pytest.mark.slow  # the demo corpus and four runs

ROOT = Path(__file__).resolve().parent.parent
SEED_IDS = ["seeds-s1", "seeds-s2", "seeds-s3"]
PAIR = "name: lr_pair\nbase: params/demo.yaml\nruns:\n  - {seed: 1, run_id: seeds-s1}  # done by seeds.yaml: skipped\n  - {lr: 3.0e-4, seed: 1}\n"
PAIR_IDS = ["lr_pair-lr3e-04-s1", "seeds-s1"]  # sweep_groups sorts by the swept value


def lorakit(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LORAKIT_ROOT": str(root), "LORAKIT_SMOKE": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "lorakit", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=1800)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, whisper_dir, real_speech) -> Path:
    """The scratch project after both sweeps (their analysis notebooks included); returns its executed/."""
    from lorakit.demo.corpus import build_corpus

    build_corpus(ROOT / "data" / "demo")  # no-op when `make` already built it
    root = tmp_path_factory.mktemp("swept")
    for name in ("notebooks", "params"):
        shutil.copytree(ROOT / name, root / name)
    (root / "data").mkdir()
    for name in ("demo", "real"):
        (root / "data" / name).symlink_to(ROOT / "data" / name, target_is_directory=True)
    with open(root / "params" / "demo.yaml", "a") as f:  # the one change: see the module docstring
        f.write(f"\nmodel: {whisper_dir}\nmax_new_tokens: 8\n")
    (root / "params" / "sweeps" / "lr_pair.yaml").write_text(PAIR)
    for sweep, expect in (("seeds", "0 already finished, 3 to run"), ("lr_pair", "1 already finished, 1 to run")):
        done = lorakit(root, "sweep", f"params/sweeps/{sweep}.yaml")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert expect in done.stdout
    return root / "executed"


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_the_records_are_what_a_sweep_writes(swept):
    """What made fixtures pass where real sweeps failed: the naming fields differ from seed to seed."""
    recorded = {i: metrics(swept / i) for i in SEED_IDS}
    assert len({m["command"] for m in recorded.values()}) == 3
    assert recorded["seeds-s2"]["command"] == "lorakit run params/demo.yaml -p seed 2 -p run_id seeds-s2"
    assert all(m["status"] == "finished" and "[smoke profile]" in m["notes"] for m in recorded.values())


def test_one_seed_group_of_three_with_each_seeds_verdict_and_mean_sd(swept):
    loaded = runs.load_runs(swept)  # all four records: the lr 3e-4 run has seed 1 and another lr, so it joins no group
    matrix = run_matrix(loaded, n_resamples=200)
    (group,) = stats.aggregate_seeds(matrix.rows)
    assert group["runs"] == SEED_IDS and group["seeds"] == [1, 2, 3] and group["n"] == 3
    recorded = [metrics(swept / i) for i in SEED_IDS]
    for key in stats.WER_KEYS:
        values = [m[key] for m in recorded]
        assert group[f"{key}_mean"] == pytest.approx(statistics.mean(values))
        assert group[f"{key}_sd"] == pytest.approx(statistics.stdev(values))
    for split, (base, tuned) in SPLIT_KEYS.items():
        deltas = [delta_pts(m[base], m[tuned]) for m in recorded]
        assert group[f"{split}_delta_pts_mean"] == pytest.approx(statistics.mean(deltas))
    assert group["baseline_wer_sd"] == 0.0  # the eval subsets do not depend on the training seed: one shared baseline
    assert set(group["verdicts"]) == {"1", "2", "3"}
    for seed, m in zip((1, 2, 3), recorded):
        assert group["verdicts"][str(seed)] == stats.seed_verdict(m)
    assert group["verdict"].split(" ")[0] in ("accept", "reject", "inconclusive")
    table = seeds_markdown([group])
    assert "seeds-s1, seeds-s2, seeds-s3" in table and "s3: " in table and " ± " in table
    # the matrix's baseline key: one config_key for the three seeds, another for the lr 3e-4 run
    keys = {r["run_id"]: r["config_key"] for r in matrix.rows}
    assert keys["seeds-s1"] == keys["seeds-s2"] == keys["seeds-s3"] != keys["lr_pair-lr3e-04-s1"]
    assert '"command"' not in keys["seeds-s1"] and '"run_id"' not in keys["seeds-s1"]


def test_sweep_groups_name_the_swept_field(swept):
    pair = runs.load_runs(swept, ",".join(PAIR_IDS))
    assert [(k, [r.run_id for r in members]) for k, members in runs.sweep_groups(pair)] == [("lr", PAIR_IDS)]
    assert stats.aggregate_seeds(run_matrix(pair, n_resamples=50).rows) == []  # two lrs are no seed group
    every = runs.sweep_groups(runs.load_runs(swept))
    assert sorted((k, [r.run_id for r in members]) for k, members in every) == [("lr", PAIR_IDS), ("seed", SEED_IDS)]


def test_plot_legends_name_the_varying_field_not_the_naming_fields(swept):
    pair = runs.load_runs(swept, ",".join(PAIR_IDS))
    assert plots.run_labels(pair) == {"lr_pair-lr3e-04-s1": "lr_pair-lr3e-04-s1 (lr=3e-4)", "seeds-s1": "seeds-s1 (lr=1e-3)"}
    seeds = runs.load_runs(swept, ",".join(SEED_IDS))
    assert plots.run_labels(seeds) == {i: f"{i} (seed={i[-1]})" for i in SEED_IDS}
    fig = plots.plot_comparison(pair)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["lr_pair-lr3e-04-s1 (lr=3e-4)", "seeds-s1 (lr=1e-3)"]


def test_the_sweeps_analysis_notebook_shows_the_seed_table(swept):
    """`lorakit sweep` ran notebooks/analysis.ipynb over its own runs: the seed sweep's shows the group."""
    def markdown_outputs(name: str) -> str:
        nb = nbformat.read(swept / f"analysis-{name}.ipynb", as_version=4)
        return "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                         for o in c.get("outputs", []))

    seeds = markdown_outputs("seeds")
    assert "| seeds-s1, seeds-s2, seeds-s3 | 1, 2, 3 |" in seeds and "No seed groups" not in seeds
    assert "No seed groups yet" in markdown_outputs("lr_pair")
    figures = {p.name for p in (swept / "figures-lr_pair").iterdir()}
    assert "compare_lr_lr_pair-lr3e-04-s1_seeds-s1.png" in figures
