"""lorakit.audio on real files written with soundfile (no mocks)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import absolute_lines, write_manifest

from lorakit import RunConfig
from lorakit.experiment.audio import (
    RMS_TARGET,
    SAMPLE_RATE,
    SILENCE_FLOOR_DBFS,
    AudioError,
    audio_sha256,
    load_audio,
    rms_dbfs,
    rms_normalize,
)
from lorakit.experiment.prepare import prepare_data


def tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
def test_resamples_to_16k_with_the_right_length(tmp_path, rate):
    path = tmp_path / f"r{rate}.wav"
    sf.write(path, tone(1.5, rate), rate)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - round(1.5 * SAMPLE_RATE)) <= 1


def test_16k_input_is_not_resampled(tmp_path):
    sig = tone(0.5, SAMPLE_RATE)
    sf.write(tmp_path / "a.wav", sig, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "a.wav"), rms_normalize(sig), rtol=1e-6)


def test_stereo_becomes_mean_of_channels(tmp_path):
    left, right = tone(0.5, SAMPLE_RATE, 440), tone(0.5, SAMPLE_RATE, 660, amp=0.1)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    x = load_audio(tmp_path / "st.wav")
    np.testing.assert_allclose(x, rms_normalize((left + right) / 2), rtol=1e-5, atol=1e-6)


def test_24_bit_pcm_and_flac(tmp_path):
    sig = tone(0.5, 44_100)
    sf.write(tmp_path / "a.wav", sig, 44_100, subtype="PCM_24")
    sf.write(tmp_path / "a.flac", sig, 44_100, subtype="PCM_24")
    a, b = load_audio(tmp_path / "a.wav"), load_audio(tmp_path / "a.flac")
    assert len(a) == 8_000
    np.testing.assert_allclose(a, b, atol=1e-6)  # same samples, different container


def test_output_rms_equals_target(tmp_path):
    sf.write(tmp_path / "quiet.wav", tone(1.0, SAMPLE_RATE, amp=0.01), SAMPLE_RATE)  # -43 dBFS: quiet, above the floor
    assert rms(load_audio(tmp_path / "quiet.wav")) == pytest.approx(RMS_TARGET, rel=1e-3)
    assert rms(load_audio(tmp_path / "quiet.wav", rms_target=0.2)) == pytest.approx(0.2, rel=1e-3)


def test_rms_normalize_exact_and_float32():
    x = np.random.default_rng(0).normal(size=4000) * 3.0  # float64 in, louder than 1
    y = rms_normalize(x)
    assert y.dtype == np.float32
    assert rms(y) == pytest.approx(RMS_TARGET, rel=1e-5)


@pytest.mark.parametrize("silent", [np.zeros(1600), np.full(1600, 1e-12), np.zeros(0)])
def test_silent_audio_is_returned_unchanged_without_nan(silent):
    y = rms_normalize(silent)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, silent.astype(np.float32))


def test_a_silent_file_is_refused_naming_it(tmp_path):
    sf.write(tmp_path / "s.wav", np.zeros(8000, np.int16), 8_000, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"s\.wav: silent audio \(every sample is zero\), under the -60 dBFS floor") as e:
        load_audio(tmp_path / "s.wav")
    assert e.value.path == str(tmp_path / "s.wav")


def dither(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A 16-bit recording of nothing: about one LSB (3e-5) of noise, -90 dBFS."""
    return np.random.default_rng(0).normal(0.0, 2 ** -15, int(seconds * rate)).astype(np.float32)


def test_a_dither_level_clip_is_refused_never_scaled_up(tmp_path):
    """The 16-bit dither floor would be multiplied ~2,500x by RMS normalization (to 0.075, pure noise)."""
    sf.write(tmp_path / "dither.wav", dither(1.0), SAMPLE_RATE, subtype="PCM_16")
    sf.write(tmp_path / "speech_level.wav", tone(1.0, SAMPLE_RATE, amp=0.05), SAMPLE_RATE, subtype="PCM_16")
    level = rms_dbfs(sf.read(tmp_path / "dither.wav", dtype="float32")[0])
    assert -95 < level < -85  # what soundfile really stored
    with pytest.raises(AudioError, match=rf"dither\.wav: near-silent audio \(RMS {level:.1f} dBFS\), under the -60 dBFS floor"):
        load_audio(tmp_path / "dither.wav")
    assert rms(load_audio(tmp_path / "speech_level.wav")) == pytest.approx(RMS_TARGET, rel=1e-3)


@pytest.mark.parametrize("dbfs, refused", [(SILENCE_FLOOR_DBFS - 1, True), (SILENCE_FLOOR_DBFS + 1, False)])
def test_the_floor_is_the_rms_level_in_dbfs(tmp_path, dbfs, refused):
    sig = tone(1.0, SAMPLE_RATE, amp=np.sqrt(2) * 10 ** (dbfs / 20))  # a sine's RMS is its amplitude / sqrt(2)
    sf.write(tmp_path / "a.wav", sig, SAMPLE_RATE, subtype="FLOAT")
    assert rms_dbfs(sig) == pytest.approx(dbfs, abs=0.01)
    if refused:
        with pytest.raises(AudioError, match="near-silent"):
            load_audio(tmp_path / "a.wav")
    else:
        assert rms(load_audio(tmp_path / "a.wav")) == pytest.approx(RMS_TARGET, rel=1e-3)


def test_rms_normalize_never_scales_up_a_near_silent_window():
    quiet = dither(0.5).astype(np.float64) * 10  # -70 dBFS: under the floor
    np.testing.assert_array_equal(rms_normalize(quiet), quiet.astype(np.float32))


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_a_near_silent_eval_clip_through_prepare_data(small_corpus, tmp_path, mode):
    """The run's data path: an error naming manifest, line and field, or a counted, reported skip."""
    sf.write(tmp_path / "dither.wav", dither(1.0), SAMPLE_RATE, subtype="PCM_16")
    domain = write_manifest(tmp_path / "domain.jsonl", absolute_lines(small_corpus["domain"], 3)
                            + [{"audio_filepath": str(tmp_path / "dither.wav"), "text": "nothing was said"}])
    cfg = RunConfig(train_manifest=str(small_corpus["train"]), domain_manifest=str(domain), heldout_manifest="",
                    min_train_clips=8, on_bad_audio=mode, test_split=0.0)  # every kept clip stays in one set, to count them
    if mode == "error":
        with pytest.raises(AudioError) as e:
            prepare_data(cfg, sampling_rate=SAMPLE_RATE)
        assert str(e.value).startswith(f"{domain}:4: field 'audio_filepath': {tmp_path / 'dither.wav'}: near-silent audio (RMS -")
        return
    splits = prepare_data(cfg, sampling_rate=SAMPLE_RATE)
    assert [u.line for u in splits.evals["domain"]] == [1, 2, 3] and splits.report["domain"]["used"] == 3
    (skip,) = splits.report["bad_audio_skipped"]
    assert (skip["manifest"], skip["line"], skip["field"]) == (str(domain), 4, "audio_filepath")
    assert "under the -60 dBFS floor" in skip["reason"]
    assert any("skipped 1 unusable clip(s)" in w and "near-silent" in w for w in splits.warnings)


def test_rms_normalize_rejects_nan_and_bad_target():
    with pytest.raises(ValueError, match="non-finite"):
        rms_normalize(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="positive"):
        rms_normalize(np.ones(10), target=0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_raise_audio_error_naming_the_file(tmp_path, bad):
    sig = tone(0.2, SAMPLE_RATE)
    sig[100] = bad
    path = tmp_path / "poison.wav"
    sf.write(path, sig, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"poison\.wav.*non-finite") as e:
        load_audio(path)
    assert e.value.path == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: audio file not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="nope.wav"):
        audio_sha256(tmp_path / "nope.wav")


def test_directory_is_not_audio(tmp_path):
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(tmp_path / "d.wav")


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match=r"bad\.wav: unreadable or corrupt"):
        load_audio(path)


def test_zero_length_files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: zero-length"):
        load_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "noframes.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"noframes\.wav: zero-length"):
        load_audio(tmp_path / "noframes.wav")


def test_audio_error_is_a_value_error_with_one_argument():
    # torch's DataLoader re-raises worker exceptions as type(msg): keep that working.
    e = AudioError("x.wav: broken", path="x.wav")
    assert isinstance(e, ValueError)
    assert str(type(e)(str(e))) == "x.wav: broken"


def test_loading_is_deterministic(tmp_path):
    sf.write(tmp_path / "a.wav", tone(1.0, 44_100) + tone(1.0, 44_100, 97.0, 0.05), 44_100)
    np.testing.assert_array_equal(load_audio(tmp_path / "a.wav"), load_audio(tmp_path / "a.wav"))


def test_float32_and_int16_copies_normalize_alike(tmp_path):
    # Train/eval parity: the same signal stored two ways must give the same model input.
    sig = tone(1.0, 8_000, amp=0.5) + np.random.default_rng(1).normal(0, 0.01, 8_000)
    sf.write(tmp_path / "f.wav", sig.astype(np.float32), 8_000, subtype="FLOAT")
    sf.write(tmp_path / "i.wav", sig, 8_000, subtype="PCM_16")
    a, b = load_audio(tmp_path / "f.wav"), load_audio(tmp_path / "i.wav")
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_sha256_is_of_file_bytes(tmp_path):
    sig = tone(0.3, SAMPLE_RATE)
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, sig, SAMPLE_RATE)
    sf.write(tmp_path / "c.wav", sig * 0.5, SAMPLE_RATE)
    assert audio_sha256(tmp_path / "a.wav") == audio_sha256(tmp_path / "b.wav")
    assert audio_sha256(tmp_path / "a.wav") != audio_sha256(tmp_path / "c.wav")
    assert len(audio_sha256(tmp_path / "a.wav")) == 64


def test_the_kits_own_audio_is_above_the_floor(real_speech, small_corpus):
    """The real-speech set and the demo builder's corpus (the small one, same code path): no clip is
    refused, so `make demo`'s numbers stand. Measured on the full data/demo and data/real: the quietest
    clip is data/real/audio/beckett.wav at -32.6 dBFS; the demo clips read -27.5 dBFS and up."""
    levels = {}
    for manifest in [*real_speech.values(), *small_corpus.values()]:
        if Path(manifest).suffix != ".jsonl":
            continue
        for r in absolute_lines(Path(manifest)):
            levels[r["audio_filepath"]] = rms_dbfs(sf.read(r["audio_filepath"], dtype="float32")[0])
    assert len(levels) > 100 and min(levels.values()) > SILENCE_FLOOR_DBFS + 20
