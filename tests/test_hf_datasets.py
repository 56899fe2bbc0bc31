"""Hugging Face datasets as input (hf_datasets.py): a dataset saved with `save_to_disk` reads as the same
utterances as the JSONL manifest it was built from, decodes to the same arrays through the one audio
path, and scores the same; bad rows and columns are errors naming the dataset, the row and the column;
the baseline key follows the dataset's fingerprint; a run takes datasets and its predictions carry row ids."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import absolute_lines, cheap
from lorakit import RunConfig
from lorakit.config import ConfigError
from lorakit.params import check_inputs_exist
from lorakit.experiment.audio import load_audio
from lorakit.experiment.baseline import baseline_key
from lorakit.experiment.evaluate import evaluate
from lorakit.experiment.hf_datasets import is_dataset_spec, read_input
from lorakit.experiment.features import Inputs
from lorakit.experiment.manifests import ManifestError, read_manifest
from lorakit.experiment.models import load_model
from lorakit.experiment.train import run

datasets = pytest.importorskip("datasets")


def save_dataset(rows: list[dict], folder: Path, audio: str = "audio", text: str = "text", cast: bool = True) -> Path:
    """A dataset of manifest rows (absolute audio paths), its audio an `Audio` column (bytes embedded by save_to_disk)."""
    ds = datasets.Dataset.from_dict({audio: [r["audio_filepath"] for r in rows], text: [r["text"] for r in rows],
                                     "speaker_id": [r.get("speaker_id") for r in rows]})
    if cast:
        ds = ds.cast_column(audio, datasets.Audio())
    ds.save_to_disk(str(folder))
    return folder


def test_a_saved_dataset_reads_decodes_and_scores_as_its_jsonl(small_corpus, whisper_dir, tmp_path):
    jsonl = small_corpus["domain"]
    rows = absolute_lines(jsonl, 8)
    folder = save_dataset(rows, tmp_path / "domain_ds")
    assert is_dataset_spec(folder) and not is_dataset_spec(jsonl)
    ds, js = read_input(folder, speaker_column="speaker_id"), read_manifest(jsonl)
    js_utts = js.utterances[:8]
    assert [u.text for u in ds.utterances] == [u.text for u in js_utts]
    assert [u.speaker_id for u in ds.utterances] == [u.speaker_id for u in js_utts]
    assert [u.duration for u in ds.utterances] == pytest.approx([u.duration for u in js_utts], abs=1e-3)
    assert [u.id for u in ds.utterances] == [f"domain_ds:{i}" for i in range(8)]
    for a, b in zip(ds.utterances, js_utts):  # the one audio path: bit-identical model input
        assert np.array_equal(load_audio(a.audio_filepath), load_audio(b.audio_filepath))
    sm = load_model(str(whisper_dir))
    inputs = Inputs(sm, 0.075, None, torch.device("cpu"))
    via_ds, via_js = (evaluate(sm, m, inputs, 4, 8) for m in (ds.utterances, js_utts))
    assert [r["hyp"] for r in via_ds.rows] == [r["hyp"] for r in via_js.rows] and via_ds.wer == via_js.wer


def test_embedded_audio_survives_the_original_files(small_corpus, tmp_path):
    """save_to_disk embeds the bytes: with the original clips gone, they are written once into the cache."""
    rows = absolute_lines(small_corpus["domain"], 4)
    copies = tmp_path / "clips"
    copies.mkdir()
    moved = [{**r, "audio_filepath": shutil.copy(r["audio_filepath"], copies)} for r in rows]
    folder = save_dataset(moved, tmp_path / "embedded")
    shutil.rmtree(copies)
    first, again = read_input(folder), read_input(folder)
    assert [u.audio_filepath for u in first.utterances] == [u.audio_filepath for u in again.utterances]
    for u, r in zip(first.utterances, rows):
        assert np.array_equal(load_audio(u.audio_filepath), load_audio(r["audio_filepath"]))


def test_a_path_column_resolves_against_the_datasets_folder(small_corpus, tmp_path):
    """A column of file paths (no Audio feature, nothing embedded) is used in place, relative ones as a JSONL's are."""
    rows = absolute_lines(small_corpus["domain"], 3)
    rel = [{**r, "audio_filepath": str(Path(r["audio_filepath"]).relative_to(small_corpus["domain"].parent))} for r in rows]
    folder = save_dataset(rel, small_corpus["domain"].parent / "paths_ds", cast=False)
    try:
        assert [u.audio_filepath for u in read_input(folder).utterances] == [r["audio_filepath"] for r in rows]
    finally:
        shutil.rmtree(folder)


def test_custom_columns_and_errors_name_the_dataset_row_and_column(small_corpus, tmp_path):
    rows = absolute_lines(small_corpus["domain"], 5)
    folder = save_dataset(rows, tmp_path / "custom", audio="clip", text="sentence")
    assert [u.text for u in read_input(folder, audio_column="clip", text_column="sentence").utterances] == [r["text"] for r in rows]
    with pytest.raises(ManifestError, match=r"custom: field 'text': no such column \(the dataset has: clip, sentence, speaker_id\)"):
        read_input(folder, audio_column="clip")

    rows[3]["text"] = "   "
    bad = save_dataset(rows, tmp_path / "bad")
    with pytest.raises(ManifestError) as err:
        read_input(bad)
    assert (err.value.line, err.value.field, err.value.path) == (3, "text", str(bad))
    assert f"{bad} row 3: field 'text': empty text" in str(err.value)
    skipped = read_input(bad, on_bad="skip")  # or left out, counted
    assert len(skipped) == 4 and skipped.skipped == [(3, "field 'text': empty text")]


def test_audio_that_is_not_audio_is_named(small_corpus, tmp_path):
    rows = absolute_lines(small_corpus["domain"], 3)
    junk = datasets.Dataset.from_dict({"audio": [{"bytes": b"not a wav", "path": None}] * 2, "text": ["a", "b"]})
    junk.cast_column("audio", datasets.Audio()).save_to_disk(str(tmp_path / "junk"))
    with pytest.raises(ManifestError) as err:
        read_input(tmp_path / "junk")
    assert [(e.line, e.field) for e in err.value.errors] == [(0, "audio"), (1, "audio")]
    assert "unreadable audio bytes" in err.value.reason and "(and 1 more bad row(s) of this dataset)" in str(err.value)
    datasets.Dataset.from_dict({"audio": ["/nope.wav"], "text": ["a"]}).save_to_disk(str(tmp_path / "gone"))
    with pytest.raises(ManifestError, match=r"gone row 0: field 'audio': audio file not found: /nope.wav"):
        read_input(tmp_path / "gone")
    numbers = datasets.Dataset.from_dict({"audio": [1, 2], "text": [r["text"] for r in rows[:2]]})
    numbers.save_to_disk(str(tmp_path / "numbers"))
    with pytest.raises(ManifestError, match=r"numbers: field 'audio': holds Value\('int64'\), not audio"):
        read_input(tmp_path / "numbers")


def test_a_dataset_dict_needs_one_split(small_corpus, tmp_path):
    rows = absolute_lines(small_corpus["domain"], 4)
    dd = datasets.DatasetDict({"dev": datasets.Dataset.from_dict({"audio": [r["audio_filepath"] for r in rows[:2]], "text": ["a", "b"]}),
                               "test": datasets.Dataset.from_dict({"audio": [r["audio_filepath"] for r in rows[2:]], "text": ["c", "d"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ManifestError, match=r"holds the splits dev, test: name one \(the split's folder"):
        read_input(tmp_path / "dd")
    assert [u.text for u in read_input(tmp_path / "dd" / "test").utterances] == ["c", "d"]


def test_a_hub_spec_loads_with_load_dataset(small_corpus, tmp_path):
    """hf:<id>[:<split>] goes through datasets.load_dataset, which takes a Hub id or, as here (offline), a
    folder laid out as on the Hub (data/<split>-*.parquet, the audio embedded)."""
    rows = absolute_lines(small_corpus["domain"], 3)
    save_dataset(rows, tmp_path / "saved")
    (tmp_path / "hub" / "data").mkdir(parents=True)
    datasets.load_from_disk(str(tmp_path / "saved")).to_parquet(str(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet"))
    m = read_input(f"hf:{tmp_path / 'hub'}:test")
    assert [u.text for u in m.utterances] == [r["text"] for r in rows] and m.utterances[0].id == "hub-test:0"
    for u, r in zip(m.utterances, rows):
        assert np.array_equal(load_audio(u.audio_filepath), load_audio(r["audio_filepath"]))
    with pytest.raises(ManifestError, match=r"hub:validation: cannot load the dataset \(ValueError: Unknown split"):
        read_input(f"hf:{tmp_path / 'hub'}:validation")


def test_baseline_key_follows_the_fingerprint(small_corpus, whisper_dir, tmp_path):
    rows = absolute_lines(small_corpus["domain"], 4)
    folder = save_dataset(rows, tmp_path / "a")
    changed = save_dataset([*rows[:3], {**rows[3], "text": rows[3]["text"] + " again"}], tmp_path / "b")
    sm = load_model(str(whisper_dir))

    def key(path, **columns):
        m = read_input(path, **columns)
        return baseline_key(sm, m.sha256, [u.id for u in m.utterances], 0.075, 8, device_type="cpu", autocast=None,
                            model_fingerprint="w")

    assert key(folder) == key(folder)  # two reads of one dataset
    assert key(changed) != key(folder)  # another fingerprint
    assert key(folder, speaker_column="speaker_id") != key(folder)  # another column choice


def test_config_accepts_dataset_folders_and_hub_specs(tiny_cfg, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="'domain_manifest': .*plain is a folder but not a dataset saved with save_to_disk"):
        check_inputs_exist(RunConfig(**{**tiny_cfg, "domain_manifest": str(tmp_path / "plain")}))
    cfg = RunConfig(**{**tiny_cfg, "domain_manifest": "hf:someone/speech:test"})
    check_inputs_exist(cfg)  # read (with the network) when the run starts
    assert cfg.input_spec("domain_manifest") == "hf:someone/speech:test"
    with pytest.raises(ConfigError, match="'heldout_manifest'.*hf: must be followed by a dataset id"):
        RunConfig(**{**tiny_cfg, "heldout_manifest": "hf:"})


def test_without_the_datasets_package_the_error_says_what_to_install(small_corpus, tmp_path, monkeypatch):
    folder = save_dataset(absolute_lines(small_corpus["domain"], 2), tmp_path / "ds")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(ManifestError, match=r"needs the `datasets` package: pip install 'lorakit\[datasets\]'"):
        read_input(folder)


def test_a_run_trains_and_evaluates_on_datasets_and_predictions_carry_row_ids(tiny_cfg, small_corpus, tmp_path):
    train = save_dataset(absolute_lines(small_corpus["train"]), tmp_path / "train_ds", text="sentence")
    domain = save_dataset(absolute_lines(small_corpus["domain"]), tmp_path / "domain_ds", text="sentence")
    cfg = RunConfig(**cheap(tiny_cfg, train_manifest=str(train), domain_manifest=str(domain), text_column="sentence",
                            speaker_column="speaker_id"), run_id="hf")
    folder = run(cfg).folder
    assert json.loads((folder / "metrics.json").read_text())["status"] == "finished"
    rows = [json.loads(x) for x in (folder / "predictions" / "domain_best.jsonl").read_text().splitlines()]
    n = len(read_manifest(small_corpus["domain"]))
    assert rows and all(r["id"].startswith("domain_ds:") and 0 <= int(r["id"].split(":")[1]) < n for r in rows)
    assert all(r["speaker_id"] for r in rows)
    recorded = json.loads((folder / "config.json").read_text())["manifests"]
    assert recorded["domain"] == {**recorded["domain"], "path": str(domain), "sha256": read_input(domain, **cfg.columns()).sha256}


def test_transcribe_takes_a_saved_dataset(small_corpus, tmp_path):
    from lorakit.deploy.transcribe import collect_inputs

    folder = save_dataset(absolute_lines(small_corpus["domain"], 3), tmp_path / "to_transcribe")
    assert [u.id for u in collect_inputs(folder)] == ["to_transcribe:0", "to_transcribe:1", "to_transcribe:2"]
