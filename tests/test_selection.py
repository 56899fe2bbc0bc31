"""Selection and reporting you can trust (issue 26, items 2, 3, 4, 7): evaluation subsets that do not
depend on the seed, one guardrail comparison for selection, verdict and search, test sets split off eval
manifests that have none, and the dev/test overlap check by audio bytes and normalized text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lorakit import RunConfig
from lorakit.analysis import matrix as matrix_mod
from lorakit.analysis import stats
from lorakit.analysis.runs import load_run
from lorakit.analysis.study_report import best_feasible, open_study as read_study
from lorakit.experiment.best import select_best
from lorakit.experiment.prepare import EVAL_SUBSET_SEED, prepare_data
from lorakit.experiment.train import run
from lorakit.launch.search import load_search, open_study, worker
from lorakit.files import read_jsonl, write_json
from lorakit.record import delta_pts

ROOT = Path(__file__).resolve().parent.parent
BASE, EXACT = 0.0449, 0.0469  # 4-decimal heldout WERs 0.2 pt apart: 0.20000000000000018 pt in floats


def ids(utts) -> list[str]:
    return [u.id for u in utts]


# --- item 2: evaluation subsets ------------------------------------------------------------------
def test_seeds_are_evaluated_on_the_same_clips(tiny_cfg):
    cfg = {**tiny_cfg, "max_eval_utterances": 5, "max_train_utterances": 20}
    one, two = (prepare_data(RunConfig(**cfg, seed=s)) for s in (1, 2))
    assert ids(one.train) != ids(two.train)  # training subsets still follow the seed...
    for name in ("domain", "heldout", "domain_test", "heldout_test"):  # ...evaluation clips do not
        sets_one, sets_two = {**one.evals, **one.tests}, {**two.evals, **two.tests}
        assert 0 < len(sets_one[name]) <= 5 and ids(sets_one[name]) == ids(sets_two[name]), name
    assert one.report["domain"]["subset"] == {"n": 5, "of": one.report["test_split"]["domain"]["dev"], "seed": EVAL_SUBSET_SEED}


# --- item 3: one guardrail -----------------------------------------------------------------------
def test_an_exact_guardrail_regression_passes_selection_verdict_and_search(tmp_path):
    evals = [{"step": 2, "domain_wer": 0.30, "heldout_wer": EXACT}, {"step": 4, "domain_wer": 0.35, "heldout_wer": BASE}]
    assert select_best(evals, BASE, 0.2) == (0, True)  # exactly 0.2 pt: within
    assert select_best([{**evals[0], "heldout_wer": 0.0470}, evals[1]], BASE, 0.2) == (1, True)  # 0.21 pt: not

    row = {"status": "finished", "domain_delta_pts": -5.0, "domain_ci_low": -6.0, "domain_ci_high": -4.0,
           "heldout_delta_pts": delta_pts(BASE, EXACT), "heldout_ci_high": delta_pts(BASE, EXACT), "guardrail": 0.2}
    assert stats.verdict(row) == "accept"
    assert stats.verdict(row, guardrail_test="noninferiority") == "accept"
    assert stats.verdict({**row, "guardrail": 0.1}).startswith("reject (heldout regression 0.20 pt > 0.1)")  # the run's own
    seed_row = {"baseline_wer": 0.30, "tuned_wer": 0.25, "heldout_baseline_wer": BASE, "heldout_tuned_wer": EXACT}
    assert stats.seed_verdict({**seed_row, "config": {"guardrail": 0.2}}) == "accept"
    assert stats.seed_verdict({**seed_row, "config": {"guardrail": 0.19}}).startswith("reject")

    path = tmp_path / "s.yaml"
    path.write_text(f"fixed: {{output_dir: {tmp_path / 'runs'}}}\nspace: {{lr: {{categorical: [0.01]}}}}\n")
    search = load_search(path)
    (tmp_path / "runs").mkdir()
    study = open_study(search, search.default_storage())

    def launch(r) -> str:  # the record a finished trial writes; the objective reads only the record
        write_json(tmp_path / "runs" / r.run_id / "metrics.json", {
            "run_id": r.run_id, "status": "finished", "stop_reason": "max_steps", "steps": 4, "baseline_wer": 0.5,
            "tuned_wer": 0.3, "heldout_baseline_wer": BASE, "heldout_tuned_wer": EXACT})
        return "finished"

    worker(study, search, 1, launch, search.default_storage())
    (trial,) = study.get_trials()
    assert trial.constraints["heldout_regression"] == 0.0  # feasible, as selection and the verdict judge it
    assert best_feasible(read_study(search.default_storage(), "s")).number == 0


# --- item 4: dev and test ------------------------------------------------------------------------
def test_eval_manifests_without_test_manifests_are_split_speaker_disjoint_and_stably(tiny_cfg):
    one, two = prepare_data(RunConfig(**tiny_cfg, seed=1)), prepare_data(RunConfig(**tiny_cfg, seed=2))
    assert one.reported_on == "test"
    for name in ("domain", "heldout"):
        dev, test = one.evals[name], one.tests[f"{name}_test"]
        assert dev and test and not set(ids(dev)) & set(ids(test))
        assert not {u.speaker_id for u in dev} & {u.speaker_id for u in test}  # speaker-disjoint
        assert (ids(dev), ids(test)) == (ids(two.evals[name]), ids(two.tests[f"{name}_test"]))  # not the seed's
        split = one.report["test_split"][name]
        assert (split["dev"], split["test"], split["by"], split["fraction"]) == (len(dev), len(test), "speaker", 0.5)
        assert one.report["dev_test_leakage"][f"{name}_test"]["leaked"] == 0
    off = prepare_data(RunConfig(**tiny_cfg, test_split=0.0))
    assert off.tests == {} and off.reported_on == "selection" and off.report["test_split"] == {}


def test_a_domain_test_set_alone_splits_heldout_or_says_it_is_chosen_on(tiny_cfg, small_corpus):
    cfg = {**tiny_cfg, "domain_manifest": str(small_corpus["domain_dev"]), "domain_test_manifest": str(small_corpus["domain"])}
    split = prepare_data(RunConfig(**cfg))
    assert set(split.tests) == {"domain_test", "heldout_test"} and list(split.report["test_split"]) == ["heldout"]
    assert split.reported_on == "test"
    mixed = prepare_data(RunConfig(**cfg, test_split=0.0))
    assert mixed.reported_on == "mixed" and set(mixed.tests) == {"domain_test"}
    metrics = {"reported_on": "mixed", "test_sets": {"domain": "domain_test"}, "heldout_baseline_wer": 0.1}
    assert matrix_mod.chosen_on_reported(metrics) == ["heldout"]
    assert matrix_mod.reported_on(metrics).endswith("heldout: chosen on the reported set")


def test_the_recipes_with_test_manifests_keep_their_sets():
    """params/demo.yaml and params/domain_only.yaml name all four eval manifests: nothing is split, every line is used."""
    demo, domain_only = (RunConfig.from_files(ROOT / "params" / f) for f in ("demo.yaml", "domain_only.yaml"))
    fields = ("domain_manifest", "heldout_manifest", "domain_test_manifest", "heldout_test_manifest")
    assert [getattr(demo, f) for f in fields] == [getattr(domain_only, f) for f in fields]  # one check covers both
    splits = prepare_data(demo)
    assert splits.report["test_split"] == {} and splits.reported_on == "test"
    for name, field in zip(("domain", "heldout", "domain_test", "heldout_test"), fields):
        lines = (ROOT / getattr(demo, field)).read_text().splitlines()
        assert len({**splits.evals, **splits.tests}[name]) == len(lines), name


def test_a_run_given_only_domain_and_heldout_reports_on_clips_it_did_not_choose_on(tiny_cfg, monkeypatch):
    """A real run in the smoke profile with the README's own-data shape (domain + heldout manifests only)."""
    monkeypatch.setenv("LORAKIT_SMOKE", "1")
    cfg = RunConfig.from_namespace({**tiny_cfg, "run_id": "own-data", "guardrail": 0.5})
    folder = run(cfg).folder
    m = json.loads((folder / "metrics.json").read_text())
    pred = folder / "predictions"
    assert m["reported_on"] == "test" and m["test_sets"] == {"domain": "domain_test", "heldout": "heldout_test"}
    assert m["guardrail"] == 0.5 and set(m["test_split"]) == {"domain", "heldout"}
    for name in ("domain", "heldout"):
        chose = {r["id"] for p in pred.glob(f"{name}_step*.jsonl") for r in read_jsonl(p)}
        reported = {r["id"] for r in read_jsonl(pred / f"{name}_test_best.jsonl")}
        assert chose and reported and not chose & reported
        assert {r["id"] for r in read_jsonl(pred / f"{name}_test_baseline.jsonl")} == reported
        assert len(reported) == m["test_split"][name]["test"]
    row = matrix_mod.run_matrix([load_run(folder)]).rows[0]
    assert row["reported_on"].startswith("test (split off domain, heldout at 0.5); chosen on dev")
    assert row["guardrail"] == 0.5 and "provisional" not in row["verdict"]
    rows = read_jsonl(pred / "heldout_test_best.jsonl")
    assert m["heldout_tuned_wer"] == pytest.approx(sum(r["errors"] for r in rows) / sum(r["ref_words"] for r in rows))


def test_old_records_without_a_test_set_get_a_provisional_verdict(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    write_json(folder / "config.json", {"config": {"guardrail": 0.2}})
    write_json(folder / "metrics.json", {"run_id": "old", "status": "finished", "baseline_wer": 0.3, "tuned_wer": 0.2,
                                         "heldout_baseline_wer": 0.1, "heldout_tuned_wer": 0.1})
    row = matrix_mod.run_matrix([load_run(folder)], require_ci=False).rows[0]
    assert row["reported_on"] == "chosen on the reported set"
    assert row["verdict"] == f"accept [{stats.PROVISIONAL}]"


# --- item 7: dev/test overlap --------------------------------------------------------------------
def test_a_test_clip_copied_under_another_name_is_caught(tiny_cfg, small_corpus, tmp_path):
    dev_rows = [json.loads(x) for x in Path(small_corpus["domain_dev"]).read_text().splitlines()]
    test_rows = [json.loads(x) for x in Path(small_corpus["domain"]).read_text().splitlines()]
    base = Path(small_corpus["domain_dev"]).parent
    source = Path(dev_rows[0]["audio_filepath"])
    source = source if source.is_absolute() else base / source
    copy = tmp_path / "renamed.wav"
    shutil.copyfile(source, copy)
    test_rows[0] = {**test_rows[0], "audio_filepath": str(copy), "duration": dev_rows[0]["duration"]}  # same bytes, other name and text
    for row in test_rows[1:]:
        path = Path(row["audio_filepath"])
        row["audio_filepath"] = str(path if path.is_absolute() else Path(small_corpus["domain"]).parent / path)
    test_path = tmp_path / "domain_test.jsonl"
    test_path.write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    splits = prepare_data(RunConfig(**{**tiny_cfg, "domain_manifest": str(small_corpus["domain_dev"]),
                                       "domain_test_manifest": str(test_path)}))
    leak = splits.report["dev_test_leakage"]["domain_test"]
    assert (leak["audio"], leak["leaked"]) == (1, 1)
    assert any(w.startswith("domain_test: 1 of") and "chosen on themselves" in w for w in splits.warnings)
