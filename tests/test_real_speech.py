"""The real-speech sanity set: its builder, and every bundled model hearing real people within a
measured bound."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

from lorakit.demo import real_speech
from lorakit.demo.real_speech import POCKETSPHINX_DATA, RealSpeechError, build_real_speech

# Measured (2 CPU cores, fp32, greedy, `evaluate` at batch 4) on the 11 clips of real.jsonl, 103 words:
# tiny.en 7.77 % and base 7.77 % (8 errors each: "Clothes" for "clubs", "5 5" for "five five", ...),
# Moonshine tiny 3.88 % (4 errors; onnxruntime on the same .ort files: 3.88 %, bench/moonshine_parity.py).
# The bounds leave room for a kernel or library version's rounding, not for a broken model.
WER_BOUNDS = {"bundled:whisper-tiny.en": 0.12, "bundled:whisper-base": 0.12, "bundled:moonshine-tiny": 0.08}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_builder_writes_16k_mono_clips_with_their_transcripts(tmp_path):
    assert real_speech.main(["--out", str(tmp_path)]) == 0
    real, long = _rows(tmp_path / "real.jsonl"), _rows(tmp_path / "long.jsonl")
    assert len(real) == 11 and [r["speaker_id"] for r in long] == ["moonshine-two_cities"]
    assert sum(r["speaker_id"] == "librivox" for r in real) == 5 and sum(r["speaker_id"] == "cards" for r in real) == 5
    assert not any("tidigits" in r["audio_filepath"] for r in real + long)  # LDC licence: left out
    for row in real + long:
        info = sf.info(str(tmp_path / row["audio_filepath"]))
        assert info.samplerate == 16000 and info.channels == 1 and abs(info.duration - row["duration"]) < 1e-3
    assert all(r["duration"] <= 30.0 for r in real) and long[0]["duration"] > 44  # two_cities was 48 kHz, 44.37 s
    cards = {r["audio_filepath"]: r["text"] for r in real}
    assert cards["audio/cards-005.wav"] == "eight of spades four of clubs seven of hearts"
    # a second call finds the build complete and leaves the files alone
    before = (tmp_path / "real.jsonl").stat().st_mtime_ns
    build_real_speech(tmp_path)
    assert (tmp_path / "real.jsonl").stat().st_mtime_ns == before


def test_missing_pocketsphinx_data_is_named_with_its_package(tmp_path):
    with pytest.raises(RealSpeechError, match=r"librivox/transcription not found.*apt-get install pocketsphinx-testdata"):
        build_real_speech(tmp_path / "out", pocketsphinx=tmp_path / "nothing")


def test_a_bad_transcription_line_is_named_by_file_and_line(tmp_path):
    copy = tmp_path / "data"
    for sub in ("librivox", "cards"):
        shutil.copytree(POCKETSPHINX_DATA / sub, copy / sub)
    lines = (copy / "cards" / "cards.transcription").read_text().splitlines()
    lines[1] = "four queen of clubs (002)"  # the <s> </s> markers lost
    (copy / "cards" / "cards.transcription").write_text("\n".join(lines) + "\n")
    (copy / "librivox" / "sense_and_sensibility_01_austen_64kb-0930.wav").unlink()
    with pytest.raises(RealSpeechError, match=r"librivox/transcription, line 5: its audio .*0930.wav is missing"):
        build_real_speech(tmp_path / "out", pocketsphinx=copy)
    shutil.copy(POCKETSPHINX_DATA / "librivox" / "sense_and_sensibility_01_austen_64kb-0930.wav", copy / "librivox")
    with pytest.raises(RealSpeechError, match=r"cards.transcription, line 2: expected '<s> words </s> \(file id\)'"):
        build_real_speech(tmp_path / "out", pocketsphinx=copy)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WER_BOUNDS))
def test_each_bundled_model_transcribes_real_speech_within_its_bound(name, real_speech, request):
    from lorakit.experiment.evaluate import evaluate
    from lorakit.experiment.features import Inputs
    from lorakit.experiment.manifests import read_manifest
    from lorakit.experiment.models import load_model

    if name == "bundled:whisper-base":
        request.getfixturevalue("bundled_whisper_base")  # converted once per session
    utts = read_manifest(real_speech["real"]).utterances
    sm = load_model(name)
    sm.model.eval()
    result = evaluate(sm, utts, Inputs(sm, 0.075, None, torch.device("cpu")), batch_size=4, max_new_tokens=128)
    print(name, f"WER {result.wer * 100:.2f} %", [r["hyp"] for r in result.rows])
    assert len(result.rows) == 11
    assert result.wer <= WER_BOUNDS[name], [(r["ref"], r["hyp"]) for r in result.rows]
