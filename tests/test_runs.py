"""Run records, the run matrix, bootstrap CIs, verdicts and the archive, on hand-made records
(tests/fixtures/make_fixtures.py documents every number used here)."""

import csv
import json
import shutil

import numpy as np
import pytest

from fixtures.records import RUNS, copy_runs
from lorakit.analysis import archive, runs, stats
from lorakit.env import project_path
from lorakit.analysis import matrix as matrix_mod

DORA, LORA, FAILED, INTERRUPTED, ARCHIVED = (
    "dora-r8-lr5e-5", "lora-r8-lr3e-4", "lora-r8-lr1e-3", "dora-r8-lr1e-4", "lora-r8-lr1e-4-old")

PROVISIONAL = f" [{stats.PROVISIONAL}]"  # the mark of a verdict on the set that chose the checkpoint


@pytest.fixture
def runs_dir(tmp_path):
    return copy_runs(tmp_path / "executed")


def by_id(items):
    return {(r.run_id if isinstance(r, runs.Run) else r["run_id"]): r for r in items}


def test_load_runs_reads_every_status(runs_dir):
    loaded = by_id(runs.load_runs(runs_dir))
    assert {k: r.status for k, r in loaded.items()} == {
        DORA: "finished", LORA: "finished", FAILED: "failed", INTERRUPTED: "interrupted",
        ARCHIVED: "finished"}
    assert loaded[ARCHIVED].archived["reason"] == "baseline evaluated without RMS normalization"
    assert not loaded[DORA].archived
    # the interrupted run has no metrics.json: its numbers come from config.json and history
    assert loaded[INTERRUPTED].get("lr") == 1e-4 and loaded[INTERRUPTED].best_step() == 100
    assert len(loaded[INTERRUPTED].history) == 14  # 12 train lines + 2 evals; the cut line dropped
    assert [r.run_id for r in runs.load_runs(runs_dir, include_archived=False)].count(ARCHIVED) == 0


def test_recent_run_without_metrics_is_running_and_stale_running_is_interrupted(tmp_path):
    shutil.copytree(RUNS, tmp_path / "ex", copy_function=shutil.copy)  # fresh mtimes (copy2 would keep the checkout's)
    assert runs.load_run(tmp_path / "ex" / INTERRUPTED).status == "running"
    run_dir = copy_runs(tmp_path / "old") / DORA
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "status": "running"}))
    assert runs.load_run(run_dir).status == "running"
    assert runs.load_run(run_dir, stale_after_s=-1).status == "interrupted"


def test_run_ids_select_and_unknown_ids_raise(runs_dir):
    assert [r.run_id for r in runs.load_runs(runs_dir, f"{LORA}, {DORA}")] == [DORA, LORA]
    assert [r.run_id for r in runs.load_runs(runs_dir, [FAILED])] == [FAILED]
    with pytest.raises(ValueError, match="nope"):
        runs.load_runs(runs_dir, "nope")


def test_no_runs_gives_an_empty_matrix_and_a_helpful_message(tmp_path):
    assert runs.load_runs(tmp_path / "missing") == []
    assert "No run records" in runs.describe([], tmp_path)
    matrix = matrix_mod.run_matrix([])
    assert matrix.rows == [] and matrix.write(tmp_path) == []
    assert "No runs" in matrix.markdown()


def test_scaled_evaluations_are_the_alpha_curve_not_steps_of_training(tmp_path):
    folder = tmp_path / "scaled"
    folder.mkdir()
    curve = [{"alpha": 1.0, "step": 4, "domain_wer": 0.2, "heldout_wer": 0.09, "chosen": False},
             {"alpha": 0.5, "step": 4, "domain_wer": 0.25, "heldout_wer": 0.05, "chosen": True}]
    (folder / "metrics.json").write_text(json.dumps({"run_id": "scaled", "status": "finished", "best_step": 4, "best_alpha": 0.5,
                                                     "adapter_scaling": curve}))
    rows = [{"kind": "eval", "step": 2, "domain_wer": 0.3, "heldout_wer": 0.06}, {"kind": "eval", "step": 4, "domain_wer": 0.2, "heldout_wer": 0.09},
            {"kind": "eval", "step": 4, "alpha": 0.5, "domain_wer": 0.25, "heldout_wer": 0.05, "best": True}]
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = runs.load_run(folder)
    assert [e["step"] for e in run.evals] == [2, 4] and run.scaling == curve
    assert matrix_mod.matrix_row(run)["best_alpha"] == 0.5 and "| 0.5 |" in matrix_mod.run_matrix([run]).markdown()


def test_matrix_rows_hold_the_hand_checked_numbers(runs_dir):
    matrix = matrix_mod.run_matrix(runs.load_runs(runs_dir))
    rows = by_id(matrix.rows)
    assert ARCHIVED not in rows  # archived runs leave the matrix
    dora = rows[DORA]
    assert dora["baseline_wer"] == pytest.approx(22 / 120, abs=1e-6)
    assert dora["tuned_wer"] == pytest.approx(6 / 120, abs=1e-6)
    assert dora["domain_delta_pts"] == pytest.approx(-16 / 120 * 100, abs=1e-3)
    assert dora["heldout_delta_pts"] == pytest.approx(0.0, abs=1e-3)
    assert (dora["adapter"], dora["rank"], dora["best_step"], dora["stop_reason"]) == ("DoRA", 8, 150, "max_steps")
    assert dora["domain_ci_low"] < dora["domain_delta_pts"] < dora["domain_ci_high"] < 0
    # these records predate test sets: their numbers chose the checkpoint, so every verdict is provisional
    assert dora["verdict"] == "accept" + PROVISIONAL
    assert rows[LORA]["verdict"] == "reject (heldout regression 2.50 pt > 0.2)" + PROVISIONAL
    assert rows[LORA]["adapter"] == "LoRA"
    # failed and interrupted runs are listed with their status and without tuned numbers
    assert (rows[FAILED]["status"], rows[FAILED]["tuned_wer"], rows[FAILED]["verdict"]) == ("failed", None, "n/a (failed)")
    assert "loss is NaN" in rows[FAILED]["notes"]
    assert (rows[INTERRUPTED]["status"], rows[INTERRUPTED]["steps"]) == ("interrupted", 120)
    assert rows[INTERRUPTED]["domain_delta_pts"] is None


def test_verdict_flips_when_the_thresholds_change(runs_dir):
    loaded = runs.load_runs(runs_dir)

    def verdicts(**criteria):
        rows = by_id(matrix_mod.run_matrix(loaded, n_resamples=500, **criteria).rows)
        return rows[DORA]["verdict"], rows[LORA]["verdict"]

    assert verdicts() == ("accept" + PROVISIONAL, "reject (heldout regression 2.50 pt > 0.2)" + PROVISIONAL)
    assert verdicts(min_domain_gain_pts=15)[0] == "reject (domain gain 13.33 pt < 15)" + PROVISIONAL
    # heldout allowed to rise 3 pt: the LoRA domain gain of 1.67 pt has a CI reaching 0
    assert verdicts(max_heldout_regression_pts=3)[1].startswith("inconclusive (domain CI")
    assert verdicts(max_heldout_regression_pts=3, require_ci=False)[1] == "accept" + PROVISIONAL
    assert verdicts(min_domain_gain_pts=2, max_heldout_regression_pts=3)[1] == "reject (domain gain 1.67 pt < 2)" + PROVISIONAL


def test_verdict_thresholds_are_inclusive_despite_float_rounding():
    row = {"status": "finished", "domain_delta_pts": (0.1068 - 0.1168) * 100,
           "heldout_delta_pts": (0.0469 - 0.0449) * 100, "domain_ci_low": -2.0, "domain_ci_high": -0.1}
    assert stats.verdict(row) == "accept"
    assert stats.verdict({**row, "domain_ci_high": 0.0}).startswith("inconclusive")
    assert stats.verdict({**row, "heldout_delta_pts": None}) == "inconclusive (no heldout WER)"
    assert stats.verdict({**row, "domain_ci_low": None, "domain_ci_high": None}).startswith("inconclusive (no domain")
    assert stats.verdict({**row, "status": "running"}) == "n/a (running)"
    assert stats.verdict({**row, "domain_delta_pts": 0.0}) == "reject (domain gain 0.00 pt < 1)"  # not -0.00


def _preds(errors, words=10, prefix="u"):
    return [{"id": f"{prefix}{i}", "ref_words": words, "errors": int(e)} for i, e in enumerate(errors)]


def test_bootstrap_ci_contains_the_true_delta_on_a_constructed_example():
    # 400 utterances of 10 words; baseline errors ~ Bin(10, 0.15), tuned fixes each error with
    # probability 0.2, so the true corpus delta is -0.15 * 0.2 = -3.0 points.
    rng = np.random.default_rng(7)
    base = rng.binomial(10, 0.15, size=400)
    tuned = base - rng.binomial(base, 0.2)
    ci = stats.paired_bootstrap(_preds(base), _preds(tuned), n_resamples=2000, seed=0)
    assert ci.delta_pts == pytest.approx((tuned.sum() - base.sum()) / 4000 * 100)
    assert ci.low_pts < -3.0 < ci.high_pts
    assert ci.excludes_zero() and ci.n_utterances == 400
    # and it does so at about the nominal rate over repeated samples
    hits = 0
    for rep in range(40):
        base = rng.binomial(10, 0.15, size=400)
        tuned = base - rng.binomial(base, 0.2)
        ci = stats.paired_bootstrap(_preds(base), _preds(tuned), n_resamples=500, seed=rep)
        hits += ci.low_pts < -3.0 < ci.high_pts
    assert hits >= 34


def test_bootstrap_is_seeded_and_paired():
    base = _preds([3, 0, 2, 5, 1, 0, 4, 2])
    a = stats.paired_bootstrap(base, base, n_resamples=300, seed=1)
    assert (a.delta_pts, a.low_pts, a.high_pts) == (0.0, 0.0, 0.0)  # paired: identical -> no spread
    tuned = _preds([2, 0, 1, 4, 1, 0, 3, 2])
    assert stats.paired_bootstrap(base, tuned, seed=3) == stats.paired_bootstrap(base, tuned, seed=3)


def test_predictions_that_do_not_pair_are_refused_clearly(runs_dir):
    with pytest.raises(stats.PredictionMismatch, match=r"1 only in baseline \['u2'\]"):
        stats.paired_bootstrap(_preds([1, 2, 3]), _preds([1, 2]))
    with pytest.raises(stats.PredictionMismatch, match="repeat id"):
        stats.pair_predictions(_preds([1, 2]) * 2, _preds([1, 2]))
    # in the matrix the run stays, with the reason as its verdict
    best = runs_dir / DORA / "predictions" / "domain_best.jsonl"
    best.write_text("".join(best.read_text().splitlines(keepends=True)[:-1]))
    row = by_id(matrix_mod.run_matrix(runs.load_runs(runs_dir), n_resamples=100).rows)[DORA]
    assert row["verdict"].startswith("inconclusive (domain predictions: baseline and tuned")
    assert "d12" in row["verdict"]


def test_matrix_files_are_written_as_markdown_and_csv(runs_dir):
    matrix = matrix_mod.run_matrix(runs.load_runs(runs_dir), n_resamples=200)
    md, csv_path = matrix.write(runs_dir)
    text = md.read_text()
    old_header = "| Run ID | Date | Command | Dataset | Steps | LR | Manifest | Baseline WER | Tuned WER | Notes |"
    assert text.startswith(old_header[:-1])  # the old team's columns come first, in order
    dora_line = next(line for line in text.splitlines() if line.startswith(f"| {DORA} "))
    assert "| 5e-5 |" in dora_line and "| 0.1833 | 0.0500 |" in dora_line and f"| accept{PROVISIONAL} |" in dora_line
    assert "-13.33 [" in dora_line
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["Run ID"] for r in table] == [r["run_id"] for r in matrix.rows]
    dora = next(r for r in table if r["Run ID"] == DORA)
    assert (dora["Tuned WER"], dora["Domain Δ pts"], dora["LR"], dora["Status"]) == ("0.0500", "-13.33", "5e-5", "finished")
    assert float(dora["Domain CI low"]) < float(dora["Domain CI high"]) < 0


def test_write_matrix_is_one_call_from_a_runs_folder(runs_dir):
    paths = matrix_mod.write_matrix(runs_dir, n_resamples=100)
    assert [p.name for p in paths] == ["run_matrix.md", "run_matrix.csv", "run_archive.md"]
    assert ARCHIVED in paths[2].read_text() and ARCHIVED not in paths[0].read_text()


def test_format_lr_matches_the_old_table():
    from lorakit.display import format_lr

    assert [format_lr(x) for x in (1e-5, 1e-4, 2e-4, 5e-5, 2.5e-4, None)] == [
        "1e-5", "1e-4", "2e-4", "5e-5", "2.5e-4", ""]


def test_archive_moves_a_run_out_of_the_matrix_and_back(runs_dir):
    with pytest.raises(ValueError, match="reason"):
        archive.archive_run(runs_dir / LORA, "  ")
    archive.archive_run(runs_dir / LORA, "superseded by the DoRA runs", date="2026-03-04")
    assert json.loads((runs_dir / LORA / "ARCHIVED").read_text()) == {
        "reason": "superseded by the DoRA runs", "date": "2026-03-04"}
    loaded = runs.load_runs(runs_dir)
    assert LORA not in by_id(matrix_mod.run_matrix(loaded, n_resamples=100).rows)
    table = by_id(archive.archive_table(loaded))
    assert table[LORA]["reason"] == "superseded by the DoRA runs" and ARCHIVED in table
    path = archive.write_archive(loaded, runs_dir)
    assert "superseded by the DoRA runs" in path.read_text()
    archive.unarchive_run(runs_dir / LORA)
    assert LORA in by_id(matrix_mod.run_matrix(runs.load_runs(runs_dir), n_resamples=100).rows)
    with pytest.raises(FileNotFoundError):
        archive.unarchive_run(runs_dir / LORA)


def test_archive_requests_from_notebook_parameters(runs_dir):
    assert archive.archive_requests(runs_dir) == "No archive changes requested."
    msg = archive.archive_requests(runs_dir, FAILED, "NaN loss, not worth resuming", ARCHIVED)
    assert msg == f"archived {FAILED}: NaN loss, not worth resuming; unarchived {ARCHIVED}"
    assert (runs_dir / FAILED / "ARCHIVED").is_file() and not (runs_dir / ARCHIVED / "ARCHIVED").exists()


def test_aggregate_seeds_groups_runs_that_differ_only_in_seed(runs_dir):
    """Copies of one hand-built record (identical predictions: sd 0 by hand). Each copy gets its own
    command and notes, as a sweep writes them; the real path (records `lorakit sweep` wrote) is
    tests/test_analysis_on_sweeps.py."""
    for seed in (1, 2):
        dest = runs_dir / f"{DORA}-s{seed}"
        shutil.copytree(runs_dir / DORA, dest)
        for name, key in (("config.json", "config"), ("metrics.json", None)):
            data = json.loads((dest / name).read_text())
            target = data[key] if key else data
            target.update(seed=seed, run_id=dest.name, notes=f"seed {seed}",
                          command=f"lorakit run params/demo.yaml -p seed {seed} -p run_id {dest.name}")
            (dest / name).write_text(json.dumps(data))
    matrix = matrix_mod.run_matrix(runs.load_runs(runs_dir), n_resamples=100)
    groups = stats.aggregate_seeds(matrix.rows)
    assert len(groups) == 1
    assert groups[0]["n"] == 3 and sorted(groups[0]["seeds"]) == [1, 2, 42]
    assert groups[0]["tuned_wer_mean"] == pytest.approx(0.05) and groups[0]["tuned_wer_sd"] == pytest.approx(0.0)
    assert "s42: " in matrix_mod.seeds_markdown(groups)


def test_sweep_groups_find_runs_differing_in_one_field(runs_dir):
    groups = runs.sweep_groups(runs.active(runs.load_runs(runs_dir)))
    assert [(k, [r.run_id for r in members]) for k, members in groups] == [("lr", [DORA, INTERRUPTED])]


def test_notebook_paths_resolve_against_the_project_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAKIT_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert project_path("executed") == tmp_path.resolve() / "executed"
    assert project_path(tmp_path / "x") == tmp_path / "x"


# --- issue 15: speaker blocks, probability of improvement, non-inferiority, hallucination columns ----
def _speaker_preds(errors, speakers, words=10):
    return [{"id": f"u{i}", "ref_words": words, "errors": int(e), "speaker_id": s}
            for i, (e, s) in enumerate(zip(errors, speakers))]


def test_speaker_correlated_errors_make_the_block_ci_wider():
    # 20 speakers x 20 utterances; the tuned model's change depends on the speaker (some helped a lot,
    # some hurt), so utterances of one speaker move together and are not independent draws
    rng = np.random.default_rng(11)
    speakers = np.repeat([f"s{k}" for k in range(20)], 20)
    effect = np.repeat(rng.normal(0, 2.0, size=20), 20)
    base = rng.binomial(10, 0.3, size=400)
    tuned = np.clip(np.round(base - 0.5 + effect), 0, 10)
    b, t = _speaker_preds(base, speakers), _speaker_preds(tuned, speakers)
    utt = stats.paired_bootstrap(b, t, n_resamples=2000, seed=0)
    block = stats.block_bootstrap(b, t, n_resamples=2000, seed=0)
    assert block.delta_pts == pytest.approx(utt.delta_pts)
    assert block.n_blocks == 20 and block.n_utterances == 400 and utt.n_blocks is None
    assert block.width_pts > 2 * utt.width_pts
    assert stats.block_bootstrap(b, t, n_resamples=2000, seed=0) == block  # seeded


def test_probability_of_improvement_and_identical_systems():
    speakers = np.repeat(["a", "b", "c", "d"], 5)
    base = _speaker_preds([3] * 20, speakers)
    better = _speaker_preds([1] * 20, speakers)
    for boot in (stats.paired_bootstrap, stats.block_bootstrap):
        assert boot(base, better, n_resamples=500, seed=0).prob_improvement == 1.0
        same = boot(base, base, n_resamples=500, seed=0)
        assert (same.delta_pts, same.low_pts, same.high_pts, same.prob_improvement) == (0.0, 0.0, 0.0, 0.0)
        assert boot(better, base, n_resamples=500, seed=0).prob_improvement == 0.0
    mixed = stats.paired_bootstrap(_preds([3, 0, 2, 5, 1, 0, 4, 2]), _preds([2, 0, 1, 4, 1, 1, 3, 2]), seed=0)
    assert 0.5 < mixed.prob_improvement < 1.0


def test_block_bootstrap_needs_speaker_ids():
    with pytest.raises(stats.PredictionMismatch, match="speaker_id"):
        stats.block_bootstrap(_preds([1, 2, 3]), _preds([1, 2, 2]))
    assert stats.speakers_of(_preds([1])) is None


def test_noninferiority_guardrail_is_reported_beside_the_point_criterion():
    row = {"status": "finished", "domain_delta_pts": -5.0, "domain_ci_low": -8.0, "domain_ci_high": -2.0,
           "heldout_delta_pts": 0.1, "heldout_ci_low": -0.6, "heldout_ci_high": 0.8}
    assert stats.guardrail_checks(row) == {"point": True, "noninferiority": False}
    assert stats.verdict(row) == "accept"  # the protocol's point criterion decides by default
    assert stats.verdict(row, guardrail_test="noninferiority") == (
        "inconclusive (heldout CI upper bound +0.80 pt > 0.2: non-inferiority not shown)")
    assert stats.verdict({**row, "heldout_ci_high": 0.2}, guardrail_test="noninferiority") == "accept"
    # the wider of the utterance and speaker-block CIs bounds non-inferiority
    assert stats.heldout_ci_high({**row, "heldout_block_ci_high": 1.4}) == 1.4
    assert stats.verdict({**row, "heldout_ci_high": None}, guardrail_test="noninferiority").startswith(
        "inconclusive (no heldout predictions")
    assert stats.verdict({**row, "heldout_delta_pts": 0.5}, guardrail_test="noninferiority") == (
        "reject (heldout regression 0.50 pt > 0.2)")
    with pytest.raises(ValueError, match="guardrail_test"):
        stats.verdict(row, guardrail_test="strict")


def test_matrix_shows_block_cis_poi_both_guardrails_and_hallucinations(runs_dir):
    loaded = runs.load_runs(runs_dir)
    point = by_id(matrix_mod.run_matrix(loaded, n_resamples=500).rows)
    dora = point[DORA]
    assert dora["domain_n_speakers"] == 3 and dora["domain_wider_ci"] in ("block", "utterance")
    assert dora["domain_block_ci_low"] < dora["domain_block_ci_high"] < 0
    assert dora["domain_poi"] == 1.0 and 0 < dora["heldout_poi"] < 1
    assert (dora["heldout_point"], dora["heldout_ni"], dora["verdict"]) == ("pass", "fail", "accept" + PROVISIONAL)
    assert dora["domain_hallucinations_baseline"] == dora["domain_hallucinations_tuned"] == 0
    assert point[FAILED]["heldout_ni"] is None and point[FAILED]["hallucinations"] == {}
    ni = by_id(matrix_mod.run_matrix(loaded, n_resamples=500, guardrail_test="noninferiority").rows)
    assert ni[DORA]["verdict"].startswith("inconclusive (heldout CI upper bound")
    assert ni[LORA]["verdict"] == point[LORA]["verdict"] == "reject (heldout regression 2.50 pt > 0.2)" + PROVISIONAL
    md = matrix_mod.run_matrix(loaded, n_resamples=200).markdown()
    assert "| Heldout NI | Hallucinations base→tuned |" in md and "domain 0→0; heldout 0→0" in md
    assert "spk |" in md and "non-inferiority" in matrix_mod.describe_criteria(guardrail_test="noninferiority")


def test_matrix_csv_has_the_new_columns_at_the_end(runs_dir):
    _, csv_path = matrix_mod.run_matrix(runs.load_runs(runs_dir), n_resamples=200).write(runs_dir)
    with open(csv_path, newline="") as f:
        header = next(csv.reader(f))
    assert header.index("Verdict") < header.index("Domain block CI low") < header.index("Heldout NI")
    assert len(header) == len(set(header))
    with open(csv_path, newline="") as f:
        dora = next(r for r in csv.DictReader(f) if r["Run ID"] == DORA)
    assert (dora["Domain P(improve)"], dora["Heldout point"], dora["Heldout NI"], dora["Guardrail test"]) == (
        "1.000", "pass", "fail", "point")
    assert dora["Domain speakers"] == "3" and dora["Domain hallucinations tuned"] == "0"


def test_parity_reports_are_shown_for_runs_with_exports_and_missing_ones_named(runs_dir):
    """The analysis notebook's section 6: the parity.md `lorakit export` wrote, under the section's
    heading level, and the runs that have none named (with the command that makes one)."""
    from lorakit.deploy.parity import parity_markdown as render

    sets = {"domain": {"n": 200, "wer": 0.1831, "sub": 40, "del": 3, "ins": 5, "differ": 0, "utt_per_s": 1.5, "utt_per_cpu_s": 0.8, "identical": True}}
    int8 = {"domain": {**sets["domain"], "wer": 0.1850, "differ": 4, "identical": False, "within_tolerance": True, "wer_delta_pts": 0.19,
                       "first_diffs": [{"id": "domain:7", "reference": "metformin", "ct2-int8": "met for men"}]}}
    report = {"run": DORA, "device": "cpu", "cpu": "AMD EPYC", "threads": 2, "sample": 200,
              "forms": {"unmerged": {"sets": sets}, "ct2-int8": {"sets": int8}}}
    (runs_dir / DORA / "export").mkdir()
    (runs_dir / DORA / "export" / "parity.md").write_text(render(report))
    md = runs.parity_markdown(runs.active(runs.load_runs(runs_dir)))
    assert md.startswith(f"### Parity: {DORA} (cpu, AMD EPYC, 2 threads")
    assert "| ct2-int8 | domain | 200 | 18.50 | 40/3/5 | 4 |" in md and "reported (+0.19 pt)" in md
    assert "`domain:7`: unmerged `metformin` -> `met for men`" in md
    assert f"No parity report for {LORA}" in md and ARCHIVED not in md and "--to ct2" in md
