"""lorakit.manifests on real JSONL and WAV files in tmp_path (no mocks)."""

import hashlib
import json
import pickle
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from lorakit.experiment.leakage import check_leakage
from lorakit.scoring import normalize_for_leakage
from lorakit.experiment.manifests import (
    DurationFilter,
    MAX_REPORTED_BAD_LINES,
    ManifestError,
    StarvationError,
    Utterance,
    filter_by_duration,
    read_manifest,
)

RATE = 16_000


def wav(folder: Path, name: str, seconds: float = 0.25, freq: float = 440.0) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE)
    return path


def write_lines(path: Path, lines: list) -> Path:
    """Objects become JSON; str/bytes lines are written verbatim."""
    out = []
    for line in lines:
        if isinstance(line, bytes):
            out.append(line)
        elif isinstance(line, str):
            out.append(line.encode())
        else:
            out.append(json.dumps(line).encode())
    path.write_bytes(b"\n".join(out) + b"\n")
    return path


@pytest.fixture
def data(tmp_path):
    """A folder with clips/a.wav (0.25 s), clips/b.wav (0.5 s), clips/c.wav (1 s)."""
    for name, secs, freq in [("a", 0.25, 440), ("b", 0.5, 550), ("c", 1.0, 660)]:
        wav(tmp_path / "clips", f"{name}.wav", secs, freq)
    return tmp_path


def utt(i: int, duration: float, text: str = "", path: str = "/x.wav") -> Utterance:
    return Utterance(f"m:{i}", path, text or f"sentence {i}", duration, None, i, "m.jsonl")


# --------------------------------------------------------------------------------- reading


def test_reads_good_manifest(data):
    m = write_lines(data / "train.jsonl", [
        {"audio_filepath": "clips/a.wav", "text": " Hello there ", "duration": 0.25,
         "speaker_id": 7, "lang": "en"},
        "",
        {"audio_filepath": str(data / "clips/b.wav"), "text": "second", "speaker_id": "s2"},
    ])
    man = read_manifest(m)
    assert len(man) == 2 and man.n_lines == 2 and man.skipped == []
    a, b = man.utterances
    assert a == Utterance("train:1", str(data / "clips/a.wav"), "Hello there", 0.25, "7", 1,
                          str(m))
    assert b.id == "train:3" and b.line == 3 and b.speaker_id == "s2"
    assert b.duration == pytest.approx(0.5)  # read from the file
    assert man.sha256 == hashlib.sha256(m.read_bytes()).hexdigest()


def test_relative_paths_resolve_against_manifest_folder(data, monkeypatch):
    sub = data / "manifests"
    sub.mkdir()
    m = write_lines(sub / "dev.jsonl", [{"audio_filepath": "../clips/c.wav", "text": "x"}])
    monkeypatch.chdir(sub.parent.parent)  # cwd must not matter
    u = read_manifest(m).utterances[0]
    assert u.audio_filepath == str(data / "clips" / "c.wav")
    assert u.duration == pytest.approx(1.0)


def test_crlf_and_bom_are_accepted(data):
    m = data / "win.jsonl"
    m.write_bytes(b'\xef\xbb\xbf{"audio_filepath": "clips/a.wav", "text": "x"}\r\n\r\n'
                  b'{"audio_filepath": "clips/b.wav", "text": "y"}\r\n')
    assert [u.line for u in read_manifest(m).utterances] == [1, 3]


GOOD = {"audio_filepath": "clips/a.wav", "text": "fine"}
BAD_LINES = [  # (line, field, message fragment)
    ('{"audio_filepath": "clips/a.wav", "text": ', None, "malformed JSON"),
    (b'{"audio_filepath": "clips/a.wav", "text": "caf\xe9"}', None, "not valid UTF-8"),
    ("[1, 2]", None, "not a JSON object (got array)"),
    ('"just a string"', None, "not a JSON object"),
    ({"text": "x"}, "audio_filepath", "missing"),
    ({"audio_filepath": "clips/a.wav"}, "text", "missing"),
    ({"audio_filepath": 3, "text": "x"}, "audio_filepath", "expected a string, got number"),
    ({"audio_filepath": "clips/a.wav", "text": ["x"]}, "text", "expected a string, got array"),
    ({"audio_filepath": "clips/a.wav", "text": "   \t "}, "text", "empty text"),
    ({"audio_filepath": "", "text": "x"}, "audio_filepath", "empty path"),
    ({**GOOD, "duration": 0}, "duration", "must be > 0"),
    ({**GOOD, "duration": -1.5}, "duration", "must be > 0"),
    ('{"audio_filepath": "clips/a.wav", "text": "x", "duration": NaN}', "duration", "finite"),
    ('{"audio_filepath": "clips/a.wav", "text": "x", "duration": 1e999}', "duration", "finite"),
    ({**GOOD, "duration": "1.2"}, "duration", "expected a number, got string"),
    ({**GOOD, "duration": True}, "duration", "expected a number, got boolean"),
    ({**GOOD, "speaker_id": [1]}, "speaker_id", "expected a string or integer"),
    ({"audio_filepath": "clips/zzz.wav", "text": "x"}, "audio_filepath", "audio file not found"),
    ({"audio_filepath": "clips/notaudio.wav", "text": "x"}, "audio_filepath", "unreadable audio"),
    ('{"audio_filepath": "clips/a.wav", "text": "\\ud800"}', "text", "lone surrogate"),
    ('{"audio_filepath": "clips/a.wav", "text": "x", "duration": 1' + "0" * 400 + "}",
     "duration", "finite"),
    ('{"audio_filepath": "clips/a.wav", "text": "x", "duration": 1' + "0" * 5000 + "}",
     None, "malformed JSON"),  # Python refuses integers over 4300 digits
    ("[" * 100_000, None, "malformed JSON"),  # RecursionError inside json
]


@pytest.mark.parametrize("line,field,fragment", BAD_LINES)
def test_each_bad_line_kind_names_line_and_field(data, line, field, fragment):
    (data / "clips" / "notaudio.wav").write_text("not audio")
    m = write_lines(data / "x.jsonl", [{"audio_filepath": "clips/b.wav", "text": "ok"}, "", line])
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    err = e.value
    assert (err.path, err.line, err.field) == (str(m), 3, field)
    assert fragment in str(err)
    prefix = f"{m}:3: field '{field}': " if field else f"{m}:3: "
    assert str(err).startswith(prefix)


def test_duplicate_line_is_bad(data):
    m = write_lines(data / "d.jsonl", [GOOD, {"audio_filepath": "clips/b.wav", "text": "fine"},
                                       {**GOOD, "text": " fine ", "duration": 0.25}])
    duplicate = r"d\.jsonl:3: field 'audio_filepath': duplicate of line 1"
    with pytest.raises(ManifestError, match=duplicate):
        read_manifest(m)


def test_every_bad_line_is_reported_in_one_error(data):
    """Three bad lines of three kinds: one error names each (file:line: field), so the file is fixed in
    one pass; its attributes stay the first bad line's."""
    m = write_lines(data / "three.jsonl", [
        GOOD, {"audio_filepath": "clips/b.wav", "text": ""}, "{oops", {"audio_filepath": "clips/c.wav", "text": "ok"},
        {"audio_filepath": "clips/nope.wav", "text": "gone"},
    ])
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    err = e.value
    assert (err.path, err.line, err.field, err.reason) == (str(m), 2, "text", "empty text")
    rows = str(err).splitlines()
    assert rows[0] == f"{m}:2: field 'text': empty text (and 2 more bad line(s) of this manifest)"
    assert rows[1].startswith(f"{m}:3: malformed JSON")
    assert rows[2].startswith(f"{m}:5: field 'audio_filepath': audio file not found")
    assert len(rows) == 3 and [(x.line, x.field) for x in err.errors] == [(2, "text"), (3, None), (5, "audio_filepath")]
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.line == 2


def test_bad_lines_past_the_limit_are_counted(data):
    n = MAX_REPORTED_BAD_LINES + 7
    m = write_lines(data / "many.jsonl", [GOOD] + [{"audio_filepath": "clips/b.wav", "text": " "}] * n)
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    rows = str(e.value).splitlines()
    assert len(rows) == MAX_REPORTED_BAD_LINES + 1 and rows[-1] == "... and 7 more bad line(s)"
    assert rows[-2].startswith(f"{m}:{MAX_REPORTED_BAD_LINES + 1}: field 'text'") and len(e.value.errors) == n


def test_skip_mode_counts_and_keeps_reasons(data):
    m = write_lines(data / "s.jsonl", [
        GOOD, "{oops", {"audio_filepath": "clips/b.wav", "text": ""}, GOOD,
        {"audio_filepath": "clips/c.wav", "text": "third"},
    ])
    with pytest.warns(UserWarning, match="skipped 3 bad lines"):
        man = read_manifest(m, on_bad="skip")
    assert [u.line for u in man.utterances] == [1, 5]
    assert [line for line, _ in man.skipped] == [2, 3, 4]
    assert man.skipped[1] == (3, "field 'text': empty text")
    assert man.skipped[2] == (4, "field 'audio_filepath': duplicate of line 1")
    assert man.n_lines == 5


def test_missing_manifest_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        read_manifest(tmp_path / "nothere.jsonl")


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_empty_manifest_is_an_error(tmp_path, mode):
    m = tmp_path / "e.jsonl"
    m.write_text("\n  \n")
    with pytest.raises(ManifestError, match="no usable lines") as e:
        read_manifest(m, on_bad=mode)
    assert e.value.line is None


def test_all_bad_in_skip_mode_is_an_error(tmp_path):
    m = write_lines(tmp_path / "b.jsonl", ["nope", "{}"])
    with pytest.raises(ManifestError, match=r"no usable lines \(2 bad lines skipped\)"):
        read_manifest(m, on_bad="skip")


def test_bad_on_bad_value(data):
    with pytest.raises(ValueError, match="on_bad"):
        read_manifest(write_lines(data / "g.jsonl", [GOOD]), on_bad="ignore")


def test_manifest_error_pickles():
    e = pickle.loads(pickle.dumps(ManifestError("m.jsonl", 4, "text", "empty text")))
    assert (str(e), e.line, e.field) == ("m.jsonl:4: field 'text': empty text", 4, "text")


# ------------------------------------------------------------------------- fuzz (hypothesis)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
manifest_objects = st.dictionaries(
    st.sampled_from(["audio_filepath", "text", "duration", "speaker_id", "other"]),
    json_values | st.sampled_from(["a.wav", "sub/../a.wav", "a.wav\x00", "hello", " ", 1.5]),
)
near_valid_objects = st.fixed_dictionaries(  # mostly right, so the success path is fuzzed too
    {"audio_filepath": st.sampled_from(["a.wav", "./a.wav", "b.wav"]), "text": st.text(max_size=8)},
    optional={"duration": json_values, "speaker_id": json_values, "x": json_values},
)
fuzz_lines = st.lists(
    st.binary(max_size=40) | st.text(max_size=30).map(str.encode)
    | (manifest_objects | near_valid_objects).map(lambda d: json.dumps(d).encode()),
    max_size=6,
)


@pytest.fixture(scope="module")
def fuzz_dir():
    with tempfile.TemporaryDirectory() as d:
        wav(Path(d), "a.wav", 0.1)
        yield Path(d)


@settings(max_examples=150, deadline=None)
@given(lines=fuzz_lines, mode=st.sampled_from(["error", "skip"]))
def test_fuzz_only_manifest_errors_escape(fuzz_dir, lines, mode):
    m = fuzz_dir / "fuzz.jsonl"
    m.write_bytes(b"\n".join(lines))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            man = read_manifest(m, on_bad=mode)
        except ManifestError:
            return
    assert man.utterances
    assert len(man.utterances) + len(man.skipped) == man.n_lines
    for u in man.utterances:
        assert u.text.strip() and u.duration > 0 and Path(u.audio_filepath).is_file()


# --------------------------------------------------------------------------- duration filter


def test_filter_keeps_short_clips_and_summarizes():
    utts = [utt(i, 5.0) for i in range(980)] + [utt(1000 + i, 20.0 + i * 0.4) for i in range(20)]
    f = filter_by_duration(utts, max_seconds=20)
    assert isinstance(f, DurationFilter)
    assert len(f.kept) == 981 and len(f.dropped) == 19  # 20.0 s itself is kept (≤)
    assert f.summary() == (
        "kept 981 of 1000 train clips (98.1 %) ≤ 20 s; dropped 19 (longest 27.6 s)")
    assert f.to_dict() == {"max_seconds": 20.0, "kept": 981, "dropped": 19}


def test_max_seconds_8_story_is_impossible_to_miss():
    # The past team's data: mostly 9-15 s clips, filtered at 8 s, keeping 12 of 1000.
    utts = [utt(i, 3.0) for i in range(12)] + [utt(100 + i, 9.0 + (i % 7)) for i in range(988)]
    with pytest.raises(StarvationError) as e:
        filter_by_duration(utts, max_seconds=8)
    err = e.value
    assert (err.kept, err.total, err.max_seconds, err.what) == (12, 1000, 8, "train")
    msg = str(err)
    assert msg.startswith("max_seconds=8 keeps only 12 of 1000 train clips (1.2 %")
    assert "refusing to train on a starved set" in msg and "Raise max_seconds" in msg


def test_fraction_guard_and_its_override():
    utts = [utt(i, 2.0) for i in range(40)] + [utt(100 + i, 30.0) for i in range(60)]
    with pytest.raises(StarvationError, match="keeps only 40 of 100 train clips"):
        filter_by_duration(utts)
    assert len(filter_by_duration(utts, min_keep_fraction=0.3).kept) == 40


def test_min_keep_guard():
    utts = [utt(i, 2.0) for i in range(20)] + [utt(100, 30.0)]
    with pytest.raises(StarvationError, match="keeps only 20 of 21 dev clips"):
        filter_by_duration(utts, what="dev")
    assert len(filter_by_duration(utts, min_keep=10).kept) == 20


def test_small_set_that_loses_nothing_passes():
    f = filter_by_duration([utt(i, 2.0) for i in range(5)])
    assert f.summary() == "kept 5 of 5 train clips (100.0 %) ≤ 20 s; dropped 0"


def test_nothing_kept_or_nothing_given_is_starvation():
    with pytest.raises(StarvationError, match="keeps only 0 of 3"):
        filter_by_duration([utt(i, 30.0) for i in range(3)], min_keep=0, min_keep_fraction=0)
    with pytest.raises(StarvationError, match="keeps only 0 of 0"):
        filter_by_duration([])


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "20", True])
def test_max_seconds_must_be_positive(bad):
    with pytest.raises(ValueError, match="max_seconds"):
        filter_by_duration([utt(0, 1.0)], max_seconds=bad)


# ----------------------------------------------------------------------------------- leakage


def test_normalize_for_leakage():
    assert normalize_for_leakage("  Don't   STOP!\tnow. ") == "dont stop now"
    assert normalize_for_leakage("well-known_fact") == "well known fact"
    assert normalize_for_leakage("?!...") == ""


def test_leakage_by_text_and_by_audio(data):
    wav(data / "clips", "a_copy.wav", 0.25, 440)  # byte-identical to a.wav
    wav(data / "clips", "d.wav", 0.3, 770)
    train = read_manifest(write_lines(data / "train.jsonl", [
        {"audio_filepath": "clips/a.wav", "text": "turn the valve left"},
        {"audio_filepath": "clips/b.wav", "text": "Open the hatch."},
        {"audio_filepath": "clips/c.wav", "text": "..."},
    ])).utterances
    domain = read_manifest(write_lines(data / "domain.jsonl", [
        {"audio_filepath": "clips/d.wav", "text": "open   the HATCH"},  # text leak
        {"audio_filepath": "clips/a_copy.wav", "text": "something new"},  # audio leak
        {"audio_filepath": "clips/d.wav", "text": "?!"},  # punctuation-only: not a leak
    ])).utterances
    heldout = read_manifest(write_lines(data / "heldout.jsonl", [
        {"audio_filepath": "clips/d.wav", "text": "fresh words"},
    ])).utterances

    report = check_leakage(train, {"domain": domain, "heldout": heldout})
    assert not report.is_clean
    d = report.sets["domain"]
    assert (d.n, d.text, d.audio, d.leaked) == (3, 1, 1, 2)
    assert d.examples == [
        {"kind": "text", "eval_id": "domain:1", "train_id": "train:2", "text": "open   the HATCH"},
        {"kind": "audio", "eval_id": "domain:2", "train_id": "train:1", "text": "something new"},
    ]
    assert report.sets["heldout"].leaked == 0
    assert report.summary().startswith("LEAKAGE: domain: 2 of 3 leak from train")
    assert json.loads(json.dumps(report.to_dict()))["domain"]["leaked"] == 2

    assert check_leakage(train, {"heldout": heldout}).is_clean


def test_leakage_examples_are_capped_at_five(data):
    train = [utt(i, 1.0, "same words", str(data / "clips/a.wav")) for i in range(1)]
    evals = [utt(100 + i, 1.0, "Same words!", str(data / "clips/b.wav")) for i in range(9)]
    s = check_leakage(train, {"domain": evals}).sets["domain"]
    assert s.leaked == 9 and len(s.examples) == 5
