"""Bad manifests and bad audio through the data path of `train.run` (`prepare_data`) and through
`run` itself: every input gives either a lorakit error naming file, line and field, or, with
on_bad_audio='skip', a skip counted in the run record. Never a traceback from torch or numpy.

The hypothesis test writes manifests mixing good and bad lines over a palette of real files
(stereo, 8/44.1 kHz, 24-bit, FLAC, silent, NaN, inf, empty, header-only, garbage, truncated,
too short, too long, a folder, a missing path) and checks `prepare_data` against an oracle that
says, line by line, what must happen to it.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import absolute_lines, cheap, write_manifest
import soundfile as sf
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lorakit import RunConfig
from lorakit.experiment.audio import AudioError
from lorakit.config import ConfigError
from lorakit.experiment.manifests import ManifestError, StarvationError
from lorakit.experiment.models import load_model
from lorakit.experiment.prepare import prepare_data
from lorakit.experiment.train import run

RATE = 16_000
MAX_SECONDS = 1.2  # the palette's long clip (1.5 s) is over it, everything else under
LORAKIT_ERRORS = (ManifestError, AudioError, ConfigError, StarvationError)


def tone(seconds: float, rate: int = RATE, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


@dataclass(frozen=True)
class Clip:
    """One palette file and what lorakit must make of it."""

    info: str  # what the manifest reader sees without a duration field: "ok", "zero" (0 s), "fail" (unreadable), "missing"
    info_seconds: float  # duration soundfile reports (when info == "ok")
    nominal: float  # what a manifest's duration field says in "declared" mode
    decodes: bool  # False: load_audio fails, or the clip is silent or too short
    seconds: float = 0.0  # decoded length


def _write_palette(d: Path) -> dict[str, Clip]:
    sf.write(d / "ok16.wav", tone(0.3), RATE)
    sf.write(d / "stereo.wav", tone(0.3, freq=500, channels=2), RATE, subtype="FLOAT")
    sf.write(d / "rate8k.wav", tone(0.3, 8_000, 520), 8_000)
    sf.write(d / "rate44k.wav", tone(0.3, 44_100, 540), 44_100)
    sf.write(d / "pcm24.wav", tone(0.3, 44_100, 560), 44_100, subtype="PCM_24")
    sf.write(d / "clip.flac", tone(0.3, freq=580), RATE, subtype="PCM_16")
    sf.write(d / "silent.wav", np.zeros(int(0.3 * RATE), np.int16), RATE, subtype="PCM_16")
    sf.write(d / "short.wav", tone(0.02, freq=600), RATE)
    for name, bad in (("nan.wav", np.nan), ("inf.wav", np.inf)):
        x = tone(0.3, freq=620)
        x[1000] = bad
        sf.write(d / name, x, RATE, subtype="FLOAT")
    sf.write(d / "long.wav", tone(1.5, freq=640), RATE)
    sf.write(d / "full.wav", tone(1.0, freq=660), RATE)
    whole = (d / "full.wav").read_bytes()
    (d / "cut.wav").write_bytes(whole[: 44 + (len(whole) - 44) // 2])  # a copy interrupted halfway
    (d / "header_cut.wav").write_bytes(whole[:20])
    (d / "full.wav").unlink()
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "noframes.wav", np.zeros(0, np.float32), RATE)
    (d / "garbage.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    (d / "folder.wav").mkdir()
    ok = Clip("ok", 0.3, 0.3, True, 0.3)
    return {
        "ok16.wav": ok, "stereo.wav": ok, "rate8k.wav": ok, "rate44k.wav": ok, "pcm24.wav": ok, "clip.flac": ok,
        "silent.wav": Clip("ok", 0.3, 0.3, False), "short.wav": Clip("ok", 0.02, 0.02, False),
        "nan.wav": Clip("ok", 0.3, 0.3, False), "inf.wav": Clip("ok", 0.3, 0.3, False),
        "long.wav": Clip("ok", 1.5, 1.5, True, 1.5), "cut.wav": Clip("ok", 0.5, 1.0, True, 0.5),
        "header_cut.wav": Clip("fail", 0, 0.3, False), "empty.wav": Clip("fail", 0, 0.3, False),
        "noframes.wav": Clip("zero", 0, 0.3, False), "garbage.wav": Clip("fail", 0, 0.3, False),
        "folder.wav": Clip("missing", 0, 0.3, False), "missing.wav": Clip("missing", 0, 0.3, False),
    }


TEXTS = {
    "a": "turn the valve left", "a_padded": "  turn the valve left ", "b": "open the hatch", "c": "check the pressure",
    "empty": "", "blank": " \t ", "surrogate": "\ud800", "huge": " ".join(["word"] * 600),
}
STRUCTURAL = {  # a line wrong by itself -> (bytes, the field its error must name)
    "malformed_json": (b'{"audio_filepath": "ok16.wav", "text": ', None),
    "non_utf8": (b'{"audio_filepath": "ok16.wav", "text": "caf\xe9"}', None),
    "not_an_object": (b'["ok16.wav", "open the hatch"]', None),
    "no_audio_key": (json.dumps({"text": "hello"}).encode(), "audio_filepath"),
    "no_text_key": (json.dumps({"audio_filepath": "ok16.wav"}).encode(), "text"),
    "audio_not_string": (json.dumps({"audio_filepath": 7, "text": "hello"}).encode(), "audio_filepath"),
    "text_not_string": (json.dumps({"audio_filepath": "ok16.wav", "text": ["hello"]}).encode(), "text"),
    "duration_string": (json.dumps({"audio_filepath": "ok16.wav", "text": "x", "duration": "0.3"}).encode(), "duration"),
    "duration_negative": (json.dumps({"audio_filepath": "ok16.wav", "text": "x", "duration": -1}).encode(), "duration"),
    "duration_nan": (b'{"audio_filepath": "ok16.wav", "text": "x", "duration": NaN}', "duration"),
    "speaker_list": (json.dumps({"audio_filepath": "ok16.wav", "text": "x", "speaker_id": [1]}).encode(), "speaker_id"),
}


@dataclass(frozen=True)
class Line:
    structural: str | None = None  # a STRUCTURAL kind, "blank_line", or None for a normal line
    clip: str = "ok16.wav"
    text: str = "a"
    duration: str = "absent"  # absent | declared (the palette's nominal value) | lying (0.2 s)


def lines_strategy(palette_names: list[str]):
    durations = st.sampled_from(["absent", "declared", "lying"])
    normal = st.builds(Line, clip=st.sampled_from(palette_names), text=st.sampled_from(sorted(TEXTS)), duration=durations)
    clean_text = st.builds(Line, clip=st.sampled_from(palette_names), text=st.sampled_from(["a", "b", "c"]), duration=durations)
    odd = st.sampled_from([*STRUCTURAL, "blank_line"]).map(lambda k: Line(structural=k))
    # half the manifests only vary the audio, so error mode gets past the reader to the decoder often
    return st.lists(normal | normal | odd, min_size=1, max_size=8) | st.lists(clean_text, min_size=1, max_size=5)


def render(line: Line, palette: dict[str, Clip]) -> bytes:
    if line.structural == "blank_line":
        return b"   "
    if line.structural:
        return STRUCTURAL[line.structural][0]
    obj = {"audio_filepath": line.clip, "text": TEXTS[line.text]}
    if line.duration != "absent":
        obj["duration"] = palette[line.clip].nominal if line.duration == "declared" else 0.2
    return json.dumps(obj).encode()


def declared(line: Line, clip: Clip) -> float:
    return {"declared": clip.nominal, "lying": 0.2}.get(line.duration, clip.info_seconds)


def oracle(lines: list[Line], palette: dict[str, Clip], role: str) -> dict:
    """What prepare_data must do with each line: bad at reading (stage 1), dropped by the duration
    filter, bad at decoding (stage 3), text too long for Whisper (stage 4), or used."""
    stage1, survivors, seen = [], [], {}
    for no, line in enumerate(lines, start=1):
        if line.structural == "blank_line":
            continue
        if line.structural:
            stage1.append((no, STRUCTURAL[line.structural][1]))
            continue
        clip, text = palette[line.clip], TEXTS[line.text].strip()
        if not text or line.text == "surrogate":
            stage1.append((no, "text"))
        elif clip.info == "missing" or (line.duration == "absent" and clip.info in ("fail", "zero")):
            stage1.append((no, "audio_filepath"))
        elif (line.clip, text) in seen:
            stage1.append((no, "audio_filepath"))  # duplicate of an earlier line
        else:
            seen[(line.clip, text)] = no
            survivors.append((no, line))
    train = role == "train"
    dropped = [no for no, line in survivors if train and declared(line, palette[line.clip]) > MAX_SECONDS]
    kept = [(no, line) for no, line in survivors if no not in dropped]
    stage3 = []
    for no, line in kept:
        clip, said = palette[line.clip], declared(line, palette[line.clip])
        if not clip.decodes:
            stage3.append((no, "audio_filepath"))
        elif abs(clip.seconds - said) > max(0.25, 0.1 * said):
            stage3.append((no, "duration"))
    bad3 = {no for no, _ in stage3}
    stage4 = [(no, "text") for no, line in kept if train and no not in bad3 and line.text == "huge"]
    used = [no for no, _ in kept if no not in bad3 and (no, "text") not in stage4]
    return {"stage1": stage1, "survivors": survivors, "dropped": dropped, "kept": kept, "stage3": stage3,
            "stage4": stage4, "used": used}


@pytest.fixture(scope="module")
def palette_dir():
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        palette = _write_palette(d)
        for name, (freq, secs) in {"fixed_a": (300, 0.4), "fixed_b": (330, 0.5), "fixed_c": (360, 0.4), "fixed_d": (390, 0.4)}.items():
            sf.write(d / f"{name}.wav", tone(secs, freq=freq), RATE)
        for name, rows in {"fixed_train": [("fixed_a", "fixed one"), ("fixed_b", "fixed two")],
                           "fixed_domain": [("fixed_c", "fixed three")], "fixed_heldout": [("fixed_d", "fixed four")]}.items():
            (d / f"{name}.jsonl").write_text("".join(json.dumps({"audio_filepath": f"{a}.wav", "text": t}) + "\n" for a, t in rows))
        yield d, palette


@pytest.fixture(scope="module")
def whisper(whisper_dir):
    return load_model(str(whisper_dir))


def fuzz_cfg(d: Path, role: str, mode: str, whisper_dir: Path) -> RunConfig:
    manifests = {"train": d / "fixed_train.jsonl", "domain": d / "fixed_domain.jsonl", "heldout": d / "fixed_heldout.jsonl"}
    manifests[role] = d / "fuzz.jsonl"
    return RunConfig(model=str(whisper_dir), train_manifest=str(manifests["train"]), domain_manifest=str(manifests["domain"]),
                     heldout_manifest=str(manifests["heldout"]), max_seconds=MAX_SECONDS, min_train_clips=1, min_keep_fraction=0.0,
                     batch_size=1, on_bad_audio=mode, max_steps=1, eval_interval=1, replay_ratio=0.0,  # a batch of 1 holds no replay
                     test_split=0.0)  # one-clip eval sets cannot be split into dev and test


def assert_names_the_line(err: Exception, manifest: Path, line: int, field: str | None) -> None:
    prefix = f"{manifest}:{line}: " + (f"field '{field}': " if field else "")
    assert str(err).startswith(prefix), (prefix, str(err))
    if isinstance(err, ManifestError):
        assert (err.path, err.line, err.field) == (str(manifest), line, field)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), role=st.sampled_from(["train", "domain", "heldout"]), mode=st.sampled_from(["error", "skip"]))
def test_fuzzed_manifests_through_prepare_data(palette_dir, whisper, whisper_dir, data, role, mode):
    d, palette = palette_dir
    lines = data.draw(lines_strategy(sorted(palette)))
    manifest = d / "fuzz.jsonl"
    manifest.write_bytes(b"\n".join(render(line, palette) for line in lines) + b"\n")
    want = oracle(lines, palette, role)
    for line in lines:
        event(f"input: {line.structural or line.clip}")
        if not line.structural:
            event(f"input: text {line.text!r}")
            event(f"input: duration {line.duration}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read_manifest warns about skipped lines; the report is checked below
        try:
            splits = prepare_data(fuzz_cfg(d, role, mode, whisper_dir), sampling_rate=RATE, sm=whisper)
        except LORAKIT_ERRORS as err:
            event(f"outcome: {mode}: {type(err).__name__}")
            assert type(err).__module__.startswith("lorakit.")
            if mode == "error" and want["stage1"]:
                assert isinstance(err, ManifestError)
                assert_names_the_line(err, manifest, *want["stage1"][0])
            elif not want["survivors"]:
                assert isinstance(err, ManifestError) and err.line is None and "no usable lines" in str(err)
            elif role == "train" and not want["kept"]:
                assert isinstance(err, StarvationError)
            elif mode == "error" and want["stage3"]:
                assert isinstance(err, AudioError)
                assert_names_the_line(err, manifest, *want["stage3"][0])
            elif mode == "error" and want["stage4"]:
                assert isinstance(err, ManifestError)
                assert_names_the_line(err, manifest, *want["stage4"][0])
                assert "over the model's limit of 448" in str(err)
            elif not want["used"] and role == "train":
                assert isinstance(err, ConfigError) and "only 0 usable training clips" in str(err)
            elif not want["used"]:
                assert isinstance(err, ManifestError) and err.path == str(manifest) and "no usable clips" in str(err)
            else:
                raise AssertionError(f"unexpected {type(err).__name__}: {err}; oracle: {want}") from err
            return
    event(f"outcome: {mode}: uses exactly the good lines")
    assert mode == "skip" or not (want["stage1"] or want["stage3"] or want["stage4"]), want
    assert want["used"] and (role != "train" or want["kept"])
    report = splits.report
    used = splits.train if role == "train" else splits.evals[role]
    assert [u.line for u in used] == want["used"]
    assert report[role]["used"] == len(want["used"])
    assert report[role]["bad_lines_skipped"] == len(want["stage1"])
    assert [b["line"] for b in report[role]["bad_lines"]] == [no for no, _ in want["stage1"]]
    audio_skips = [(s["line"], s["field"]) for s in report.get("bad_audio_skipped", []) if s["manifest"] == str(manifest)]
    assert audio_skips == want["stage3"]
    if role == "train":
        assert report["train"]["dropped_over_max_seconds"] == len(want["dropped"])
        assert [s["line"] for s in report["train"].get("too_long_text_skipped", [])] == [no for no, _ in want["stage4"]]
    if want["stage1"] or want["stage3"] or want["stage4"]:
        assert splits.warnings  # a skip is never silent


# --- clips longer than the model's input window --------------------------------------------------

@pytest.mark.parametrize("model, mode", [("whisper", "error"), ("whisper", "skip"), ("moonshine", "error")])
def test_an_eval_clip_over_whispers_30_s_window_is_refused_or_counted_never_cut(model, mode, whisper, moonshine_dir,
                                                                                small_corpus, tmp_path):
    """Whisper's feature extractor keeps the first 30 s of a clip: scored on its whole text, a longer
    clip would count words the model never heard. Moonshine takes any length, so it keeps the clip."""
    sf.write(tmp_path / "long.wav", tone(31.0, freq=300), RATE)
    domain = write_manifest(tmp_path / "domain.jsonl", absolute_lines(small_corpus["domain"], 3)
                            + [{"audio_filepath": str(tmp_path / "long.wav"), "text": "a long recording"}])
    cfg = RunConfig(train_manifest=str(small_corpus["train"]), domain_manifest=str(domain), heldout_manifest="", test_split=0.0,
                    min_train_clips=8, on_bad_audio=mode)
    sm = whisper if model == "whisper" else load_model(str(moonshine_dir))
    if model == "whisper" and mode == "error":
        with pytest.raises(AudioError) as info:
            prepare_data(cfg, sampling_rate=RATE, sm=sm)
        assert_names_the_line(info.value, domain, 4, "duration")
        assert "lasts 31.00 s, over the model's 30 s input window" in str(info.value)
        return
    splits = prepare_data(cfg, sampling_rate=RATE, sm=sm)
    if model == "moonshine":
        assert [u.line for u in splits.evals["domain"]] == [1, 2, 3, 4] and "bad_audio_skipped" not in splits.report
        return
    assert [u.line for u in splits.evals["domain"]] == [1, 2, 3] and splits.report["domain"]["used"] == 3
    (skip,) = splits.report["bad_audio_skipped"]
    assert (skip["manifest"], skip["line"], skip["field"]) == (str(domain), 4, "duration") and "31.00 s" in skip["reason"]
    assert any("skipped 1 unusable clip(s)" in w for w in splits.warnings)


# --- the same inputs through run(): a few representative cases ----------------------------------

@pytest.mark.parametrize("case", ["nan_clip", "non_utf8_line", "text_too_long"])
def test_run_refuses_bad_input_naming_file_line_and_field(case, tiny_cfg, small_corpus, tmp_path):
    rows = absolute_lines(small_corpus["train"], 12)
    if case == "nan_clip":
        x = tone(1.0)
        x[500] = np.nan
        sf.write(tmp_path / "poison.wav", x, RATE, subtype="FLOAT")
        rows.insert(5, {"audio_filepath": str(tmp_path / "poison.wav"), "text": "a poisoned clip", "duration": 1.0})
        expected = (AudioError, 6, "audio_filepath", "1 non-finite samples")
    elif case == "non_utf8_line":
        rows.insert(3, b'{"audio_filepath": "x.wav", "text": "caf\xe9"}')
        expected = (ManifestError, 4, None, "not valid UTF-8")
    else:
        rows[7] = {**rows[7], "text": " ".join(["word"] * 600)}
        expected = (ManifestError, 8, "text", "over the model's limit of 448")
    manifest = write_manifest(tmp_path / "train.jsonl", rows)
    kind, line, field, fragment = expected
    with pytest.raises(LORAKIT_ERRORS) as info:
        run(RunConfig(**cheap(tiny_cfg, train_manifest=str(manifest)), run_id=case))
    err = info.value
    assert type(err) is kind and type(err).__module__.startswith("lorakit.")
    assert_names_the_line(err, manifest, line, field)
    assert fragment in str(err)
    folder = Path(tiny_cfg["output_dir"]) / case
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"] == f"{kind.__name__}: {err}"
    assert not (folder / "history.jsonl").exists()  # refused before the first step


def test_run_skip_mode_counts_every_skip_in_the_record(tiny_cfg, small_corpus, tmp_path, capsys):
    d = tmp_path / "clips"
    d.mkdir()
    palette = _write_palette(d)
    assert palette["cut.wav"].nominal == 1.0
    sf.write(d / "very_long.wav", tone(21.0, freq=250), RATE)  # over the default max_seconds (20)
    good = absolute_lines(small_corpus["train"], 12)
    bad_lines = [  # rejected by the manifest reader
        b'{"audio_filepath": "ok16.wav", "text": ', b'{"audio_filepath": "ok16.wav", "text": "caf\xe9"}',
        {"audio_filepath": str(d / "missing.wav"), "text": "gone"}, {"audio_filepath": str(d / "ok16.wav"), "text": "  "},
        good[0],  # a duplicated line
    ]
    bad_clips = [  # rejected when decoded (durations given, so the reader cannot tell)
        {"audio_filepath": str(d / name), "text": f"clip {name}", "duration": palette[name].nominal}
        for name in ("nan.wav", "inf.wav", "silent.wav", "short.wav", "garbage.wav", "empty.wav", "cut.wav")
    ]
    fine = [{"audio_filepath": str(d / name), "text": f"tone {name}"} for name in ("stereo.wav", "rate8k.wav", "pcm24.wav")]
    train = write_manifest(tmp_path / "train.jsonl", good + bad_lines + bad_clips + fine
                           + [{"audio_filepath": str(d / "very_long.wav"), "text": "a long one"}])
    domain_rows = absolute_lines(small_corpus["domain"], 3) + [{"audio_filepath": str(d / "nan.wav"), "text": "nan", "duration": 0.3}]
    domain = write_manifest(tmp_path / "domain.jsonl", domain_rows)
    with pytest.warns(UserWarning, match="skipped 5 bad lines"):  # read_manifest's own warning, besides the record
        result = run(RunConfig(**cheap(tiny_cfg, train_manifest=str(train), domain_manifest=str(domain), max_eval_utterances=0, test_split=0.0,
                                       on_bad_audio="skip"), run_id="skips"))
    m = json.loads((result.folder / "metrics.json").read_text())
    assert m["status"] == "finished"
    data = m["data"]
    assert data["train"]["bad_lines_skipped"] == 5 and [b["line"] for b in data["train"]["bad_lines"]] == [13, 14, 15, 16, 17]
    assert data["train"]["dropped_over_max_seconds"] == 1
    assert data["train"]["used"] == 12 + 3  # the stereo, 8 kHz and 24-bit clips are good input
    skipped = {(Path(s["manifest"]).name, s["line"], s["field"]) for s in data["bad_audio_skipped"]}
    assert skipped == {("train.jsonl", n, "audio_filepath") for n in range(18, 24)} | {("train.jsonl", 24, "duration"),
                                                                                      ("domain.jsonl", 4, "audio_filepath")}
    assert data["domain"]["used"] == 3
    assert any("skipped 5 bad manifest line(s)" in w for w in m["warnings"])
    assert any("skipped 8 unusable clip(s)" in w for w in m["warnings"])
    assert "WARNING: train: skipped 5 bad manifest line(s)" in capsys.readouterr().out
    config = json.loads((result.folder / "config.json").read_text())
    assert config["manifests"]["train"]["n_lines"] == 12 + 5 + 7 + 3 + 1 and config["manifests"]["train"]["n_used"] == 15
