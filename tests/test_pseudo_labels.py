"""Replay from unlabeled audio and the label check (issue 28 items 1 and 5): real smoke runs on the tiny
Whisper with the small synthesized corpus, and the rules on their own."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import absolute_lines, cheap, write_manifest
from lorakit import RunConfig
from lorakit.config import ConfigError
from lorakit.experiment import pseudo_labels as pl
from lorakit.experiment import train as train_mod
from lorakit.experiment.train import run


def _audio_folder(small_corpus, tmp_path):
    folder = tmp_path / "unlabeled"
    for i, row in enumerate(absolute_lines(small_corpus["replay"])):
        (folder / f"part{i % 2}").mkdir(parents=True, exist_ok=True)  # nested: read recursively
        shutil.copy(row["audio_filepath"], folder / f"part{i % 2}" / f"clip{i:02d}.wav")
    return folder


def test_unlabeled_replay_is_a_folder_of_audio_or_rows_without_text(small_corpus, tmp_path):
    folder = _audio_folder(small_corpus, tmp_path)
    rows = absolute_lines(small_corpus["replay"])
    no_text = write_manifest(tmp_path / "no_text.jsonl", [{k: v for k, v in r.items() if k != "text"} for r in rows])
    assert pl.is_unlabeled(str(folder)) and pl.is_unlabeled(str(no_text))
    assert not pl.is_unlabeled(str(small_corpus["replay"]))  # transcribed: read as labeled
    (tmp_path / "saved_ds").mkdir()
    (tmp_path / "saved_ds" / "state.json").write_text("{}")
    assert not pl.is_unlabeled(str(tmp_path / "saved_ds"))  # a save_to_disk dataset, not a folder of audio
    from_folder, from_rows = pl.read_unlabeled(str(folder)), pl.read_unlabeled(str(no_text))
    assert len(from_folder.utterances) == len(from_rows.utterances) == len(rows) == 12
    assert {u.text for u in from_folder.utterances} == {""} and all(u.duration > 0.5 for u in from_folder.utterances)
    assert [u.duration for u in from_rows.utterances] == [r["duration"] for r in rows]
    bad = write_manifest(tmp_path / "bad.jsonl", [{"duration": 1.0}])
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'audio_filepath'"):
        pl.read_unlabeled(str(bad))


def test_a_pseudo_label_is_left_out_when_empty_unsure_or_hallucinated():
    row = {"hyp": "the train leaves at noon", "avg_logprob": -0.3, "seconds": 2.0}
    assert pl.pseudo_label_problem(row, "en", -1.0) is None
    assert pl.pseudo_label_problem({**row, "hyp": " . "}, "en", -1.0) == "empty"
    assert pl.pseudo_label_problem({**row, "avg_logprob": -1.2}, "en", -1.0) == "unsure"
    assert pl.pseudo_label_problem({**row, "hyp": "oui " * 6}, "fr", -1.0) == "loop"
    long = " ".join(f"mot{i}" for i in range(20))  # 20 distinct words in 2 s: over 5 words/s + 5
    assert pl.pseudo_label_problem({**row, "hyp": long}, "fr", -1.0) == "runaway"


def test_replay_from_a_folder_of_audio_trains_on_the_base_models_transcripts(tiny_cfg, small_corpus, tmp_path, monkeypatch):
    folder = _audio_folder(small_corpus, tmp_path)
    seen = []
    real_step = train_mod.train_step

    def spy(sm, inputs, micro_batches, *args, **kwargs):
        seen.extend(u for b in micro_batches for u in b)
        return real_step(sm, inputs, micro_batches, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", spy)
    # a real base model (a random one writes nothing), at Whisper's own confidence floor (the default, -1.0)
    cfg = RunConfig(**cheap(tiny_cfg, run_id="pseudo", model="bundled:whisper-tiny.en", replay_manifest=str(folder),
                            replay_ratio=0.5, max_steps=2, max_new_tokens=48))
    result = run(cfg)
    report = result.metrics["data"]["replay"]["pseudo_labels"]
    assert report["clips"] == 12 and report["kept"] + report["left_out"] == 12 and report["kept"] >= 6
    assert sum(report["left_out_by_reason"].values()) == report["left_out"] and report["cached"] is False
    cached = pl.read_jsonl(pl.cache_root() / "base_transcripts" / f"{report['cache_key']}.jsonl")
    hyps = {row["id"]: row["hyp"] for row in cached}
    replayed = [u for u in seen if u.manifest == str(folder)]
    assert replayed and all(u.text == hyps[u.id] for u in replayed)  # the targets are the base model's transcripts
    assert result.metrics["data"]["replay"]["used"] == report["kept"]
    from lorakit.analysis.label_errors import data_checks_markdown
    from lorakit.analysis.runs import load_run

    shown = data_checks_markdown([load_run(result.folder)])  # the analysis notebook's section, from the record
    assert f"| pseudo | not checked | {report['kept']} of 12 kept" in shown
    again = run(RunConfig(**{**cfg.to_dict(), "run_id": "pseudo-again"}))
    assert again.metrics["data"]["replay"]["pseudo_labels"]["cached"] is True  # decoded once, keyed like the baseline
    # a floor no transcript reaches leaves every clip out as "unsure": one clear line, before training
    with pytest.raises(ConfigError, match=r"only 0 replay clips of .*unlabeled have a usable pseudo-label"):
        run(RunConfig(**{**cfg.to_dict(), "run_id": "pseudo-unsure", "pseudo_label_min_logprob": -1e-6}))


def test_label_check_lists_a_label_far_too_long_for_its_clip_and_skip_drops_it(tiny_cfg, small_corpus, tmp_path):
    rows = absolute_lines(small_corpus["train"])
    wrong = {**rows[3], "text": " ".join(["a much longer transcript that belongs to another recording"] * 6)}
    train = write_manifest(tmp_path / "train_bad_label.jsonl", rows[:3] + [wrong] + rows[4:])
    base = cheap(tiny_cfg, train_manifest=str(train), max_steps=2, label_check_wer=1e6)  # the length rule alone
    reported_run = run(RunConfig(**base, run_id="labels-report", label_check="report"))
    reported = reported_run.metrics
    check = reported["data"]["train"]["label_check"]
    assert check["flagged"] == 1 and check["dropped"] == 0 and check["checked"] == len(rows)
    listed = check["likely_label_errors"][0]
    assert listed["line"] == 4 and listed["text"] == wrong["text"] and "characters per second" in listed["reasons"][0]
    assert any("1 likely label error" in w for w in reported["warnings"])
    from lorakit.analysis.label_errors import label_check_summary, label_errors_markdown
    from lorakit.analysis.runs import load_run

    shown = load_run(reported_run.folder)  # the analysis side reads the record the run wrote
    assert label_check_summary(shown) == f"1 of {len(rows)} flagged, 0 dropped (report)"
    assert "| train_bad_label.jsonl:4 |" in label_errors_markdown([shown])
    skipped = run(RunConfig(**base, run_id="labels-skip", label_check="skip")).metrics
    assert skipped["data"]["train"]["label_check"]["dropped"] == 1 and skipped["data"]["train"]["used"] == len(rows) - 1
    assert skipped["data"]["train"]["label_check"]["cached"] is True  # the same base pass, from the cache
    # the analysis notebook (as `lorakit analysis --runs` executes it) shows both runs' checks and the flagged clip
    from lorakit.launch.notebooks import execute_analysis

    runs_dir = reported_run.folder.parent
    assert execute_analysis(tmp_path / "analysis.ipynb", {"runs_dir": str(runs_dir), "figures_dir": str(tmp_path / "fig")})
    shown = _markdown_outputs(tmp_path / "analysis.ipynb")
    assert f"| labels-report | 1 of {len(rows)} flagged, 0 dropped (report) | none |" in shown
    assert f"| labels-skip | 1 of {len(rows)} flagged, 1 dropped (skip) | none |" in shown
    assert "| labels-report | train_bad_label.jsonl:4 |" in shown and "| labels-skip | train_bad_label.jsonl:4 |" in shown


def _markdown_outputs(notebook) -> str:
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    return "\n".join(o["data"]["text/markdown"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if "text/markdown" in o.get("data", {}))


def test_label_problems_by_the_base_models_wer(small_corpus):
    from lorakit.experiment.manifests import read_manifest

    u = read_manifest(small_corpus["train"]).utterances[0]
    same = pl.label_problems(u, {"hyp": u.text}, "en", 1.0)
    other = pl.label_problems(u, {"hyp": "completely different words about the weather in town today and more"}, "en", 0.8)
    assert same is None and other["wer"] > 0.8 and other["reasons"][0].startswith("base-model WER")
