"""The demo corpus: determinism, split hygiene, audio format. Uses the real espeak-ng, flite and sox."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from lorakit.env import PROGRESS_ENV
from lorakit.demo import corpus
from lorakit.demo import words as corpus_words

SIZES = {"n_train": 24, "n_domain": 20, "n_heldout": 12, "n_replay": 10, "n_domain_dev": 8, "n_heldout_dev": 6}
FILES = ["train.jsonl", "domain.jsonl", "heldout.jsonl", "replay.jsonl", "domain_dev.jsonl", "heldout_dev.jsonl",
         "train_domain_only.jsonl", "terms.txt"]
SPLITS = ("train", "domain", "heldout", "replay", "domain_dev", "heldout_dev")


def _rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """The same small corpus built twice into separate folders."""
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    corpus.build_corpus(a, seed=0, **SIZES)
    corpus.build_corpus(b, seed=0, **SIZES, jobs=4)  # other thread count, same bytes
    return a, b


def test_same_seed_gives_identical_files(built):
    a, b = built
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_sizes_and_manifest_keys(built):
    a, _ = built
    summary = json.loads((a / "corpus.json").read_text())
    assert summary["sizes"] == {"train": 24, "domain": 20, "heldout": 12, "replay": 10, "domain_dev": 8, "heldout_dev": 6}
    for split, n in summary["sizes"].items():
        rows = _rows(a, split)
        assert len(rows) == n
        for row in rows:
            language = {"language"} if split == "replay" else set()  # the replay set says its language (issue 31)
            assert set(row) == {"audio_filepath", "text", "duration", "speaker_id"} | language
            assert row.get("language", "en") == "en"
            assert row["audio_filepath"].startswith(f"audio/{split}/") and isinstance(row["duration"], float)


def test_no_sentence_in_two_splits(built):
    a, _ = built
    texts = {s: {r["text"].lower() for r in _rows(a, s)} for s in SPLITS}
    assert sum(len(t) for t in texts.values()) == 80  # also unique within each split
    for i, one in enumerate(SPLITS):
        for two in SPLITS[i + 1 :]:
            assert not texts[one] & texts[two], (one, two)


def test_domain_only_terms_and_voices_stay_out_of_train(built):
    a, _ = built
    summary = json.loads((a / "corpus.json").read_text())
    train, domain = _rows(a, "train"), _rows(a, "domain")
    train_text = "\n".join(r["text"] for r in train)
    domain_text = "\n".join(r["text"] for r in domain)
    terms = summary["domain_only_terms"]
    assert 0.15 <= sum(t in corpus_words.DRUGS for t in terms) / len(corpus_words.DRUGS) <= 0.20
    assert not [t for t in terms if corpus.term_in(t, train_text)]
    assert any(corpus.term_in(t, domain_text) for t in terms)
    only = set(summary["domain_only_voices"])
    assert only and not only & {r["speaker_id"] for r in train}
    assert only & {r["speaker_id"] for r in domain}


def test_heldout_is_spoken_by_flite_and_train_mixes_everyday_speech(built):
    a, _ = built
    assert all(r["speaker_id"].startswith("flite:") for r in _rows(a, "heldout"))
    assert any(r["speaker_id"].startswith("flite:") for r in _rows(a, "train"))


def test_audio_is_16k_mono_pcm16_and_durations_match(built):
    a, _ = built
    for split in SPLITS:
        for row in _rows(a, split):
            info = sf.info(a / row["audio_filepath"])
            assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
            assert abs(info.frames / 16_000 - row["duration"]) < 1e-3
            assert 1.0 < row["duration"] < 20.0


def test_rebuild_is_skipped_unless_the_corpus_is_incomplete(tmp_path):
    tiny = ["--out", str(tmp_path), "--n-train", "6", "--n-domain", "4", "--n-heldout", "4", "--n-replay", "2",
            "--n-domain-dev", "2", "--n-heldout-dev", "2"]
    assert corpus.main(tiny) == 0
    stamp = (tmp_path / "corpus.json").stat().st_mtime_ns
    assert corpus.main(tiny) == 0
    assert (tmp_path / "corpus.json").stat().st_mtime_ns == stamp
    # a missing clip makes the corpus incomplete, so it is rebuilt
    first = tmp_path / _rows(tmp_path, "heldout")[0]["audio_filepath"]
    first.unlink()
    assert corpus.main(tiny) == 0
    assert first.is_file() and (tmp_path / "corpus.json").stat().st_mtime_ns != stamp


def test_the_build_shows_a_progress_bar(tmp_path, monkeypatch, capsys):
    """Synthesis is the long step of `make demo` (minutes): it shows a bar, one tick per clip."""
    monkeypatch.setenv(PROGRESS_ENV, "text")  # what `lorakit` sets for a kernel streaming to a terminal
    tiny = ["--out", str(tmp_path), "--n-train", "2", "--n-domain", "2", "--n-heldout", "2", "--n-replay", "1",
            "--n-domain-dev", "1", "--n-heldout-dev", "1"]
    assert corpus.main(tiny) == 0
    err = capsys.readouterr().err
    assert "demo corpus: synthesize" in err and "9/9" in err, err[-500:]


def test_changed_generator_invalidates_the_cache(built, monkeypatch):
    a, _ = built
    summary = json.loads((a / "corpus.json").read_text())
    planned, _ = corpus.plan_corpus(0, **SIZES)
    assert summary["plan_sha256"] == corpus.plan_sha256(planned)
    identity = {k: summary[k] for k in ("version", "seed", "sizes", "plan_sha256")}
    assert corpus.is_complete(a, identity)
    monkeypatch.setattr(corpus_words, "DOSE_UNITS", ["units"])  # e.g. someone edits a word list
    replanned, _ = corpus.plan_corpus(0, **SIZES)
    assert not corpus.is_complete(a, {**identity, "plan_sha256": corpus.plan_sha256(replanned)})


def test_replay_is_everyday_speech_by_train_voices_and_no_eval_voice(built):
    a, _ = built
    summary = json.loads((a / "corpus.json").read_text())
    replay = _rows(a, "replay")
    assert len(replay) == 10 and all(r["audio_filepath"].startswith("audio/replay/r") for r in replay)
    voices = {r["speaker_id"] for r in replay}
    assert voices <= {v.speaker_id for v in corpus.TRAIN_GENERAL_VOICES}
    assert not voices & {r["speaker_id"] for r in _rows(a, "heldout")} and not voices & set(summary["domain_only_voices"])
    text = "\n".join(r["text"] for r in replay)
    assert not [t for t in summary["domain_only_terms"] if corpus.term_in(t, text)]
    planned, _ = corpus.plan_corpus(0, **SIZES)
    assert {u.kind for u in planned if u.split == "replay"} == {"everyday"}


def test_domain_only_train_is_the_clinical_lines_of_train(built):
    a, _ = built
    train = (a / "train.jsonl").read_text().splitlines(keepends=True)
    planned, _ = corpus.plan_corpus(0, **SIZES)
    kinds = [u.kind for u in planned if u.split == "train"]
    clinical = [line for line, kind in zip(train, kinds) if kind == "clinical"]
    assert (a / "train_domain_only.jsonl").read_text().splitlines(keepends=True) == clinical
    assert len(clinical) == 24 - round(corpus.GENERAL_SHARE_TRAIN * 24) == json.loads((a / "corpus.json").read_text())["train_domain_only"]
    assert len(kinds) == len(train) and "everyday" in kinds


def _plan_fingerprint(planned, splits=("train", "domain", "heldout")) -> str:
    rows = [(u.split, u.path, u.text, u.voice.speaker_id, u.speed, u.pitch, u.noise_seed) for u in planned if u.split in splits]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


@pytest.mark.parametrize("sizes, before", [
    ((24, 20, 12), "5d48bbd359220a4f15b0c30c1ff50a8cd9aafafeaa406b9446292c89422773dc"),
    ((1200, 520, 320), "a784db89ef24b81cc344cbd26223899a5cdeb3341f0bd9dc685fe6ff1912707c"),  # the demo corpus
])
def test_adding_replay_changes_no_clip_of_the_other_splits(sizes, before):
    """`before`: the fingerprint of the three splits as planned before the replay split existed (commit 35f6d61)."""
    without, _ = corpus.plan_corpus(0, *sizes)
    with_replay, terms = corpus.plan_corpus(0, *sizes, n_replay=240)
    assert _plan_fingerprint(without) == _plan_fingerprint(with_replay) == before
    assert sum(u.split == "replay" for u in with_replay) == 240 and not any(u.split == "replay" for u in without)
    corpus.check_splits(with_replay, terms)


def test_adding_dev_sets_changes_no_clip_of_the_test_sets():
    """The dev splits are drawn after every other split: domain.jsonl and heldout.jsonl (now the test sets) keep
    every clip, so their baselines and the demo's earlier numbers stay comparable."""
    before, _ = corpus.plan_corpus(0, 1200, 520, 320, 240)
    after, terms = corpus.plan_corpus(0, 1200, 520, 320, 240, 200, 150)
    assert [u for u in after if not u.split.endswith("_dev")] == before
    assert {s: sum(u.split == s for u in after) for s in ("domain_dev", "heldout_dev")} == {"domain_dev": 200, "heldout_dev": 150}
    corpus.check_splits(after, terms)
    dev_voices = {u.voice for u in after if u.split == "heldout_dev"}
    assert dev_voices <= set(corpus.HELDOUT_VOICES) and {u.voice for u in after if u.split == "replay"}.isdisjoint(dev_voices)


def test_check_splits_refuses_replay_sharing_a_sentence_or_a_heldout_voice():
    planned, terms = corpus.plan_corpus(0, **SIZES)
    heldout = next(u for u in planned if u.split == "heldout")
    i = next(i for i, u in enumerate(planned) if u.split == "replay")
    with pytest.raises(AssertionError, match="heldout and replay"):
        corpus.check_splits([*planned[:i], dataclasses.replace(planned[i], text=heldout.text), *planned[i + 1 :]], terms)
    with pytest.raises(AssertionError, match="heldout voice is in replay"):
        corpus.check_splits([*planned[:i], dataclasses.replace(planned[i], voice=heldout.voice), *planned[i + 1 :]], terms)


def test_other_seed_gives_other_sentences():
    one, _ = corpus.plan_corpus(0, **SIZES)
    two, _ = corpus.plan_corpus(1, **SIZES)
    assert [u.text for u in one] != [u.text for u in two]


@pytest.mark.parametrize("templates", [corpus_words.CLINICAL_TEMPLATES, corpus_words.GENERAL_TEMPLATES])
def test_sentence_generator_has_variety(templates):
    rng = random.Random(0)
    lists = corpus.word_lists(set(), allow_domain_only=True)
    sentences = [corpus.make_sentence(rng.choice(templates), rng, lists) for _ in range(2000)]
    assert len(set(sentences)) >= 0.95 * len(sentences)
    assert all("{" not in s and s[0].isupper() for s in sentences)


def test_missing_binary_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no espeak-ng, flite or sox
    with pytest.raises(RuntimeError, match=r"espeak-ng.*make demo"):
        corpus.build_corpus(tmp_path / "demo", seed=0, **SIZES)


def test_module_entry_point_builds_a_corpus(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "lorakit.demo.corpus", "--out", str(out), "--seed", "5", "--n-train", "40",
                           "--n-domain", "16", "--n-heldout", "12", "--n-replay", "6", "--n-domain-dev", "4", "--n-heldout-dev", "3"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = {split: len((out / f"{split}.jsonl").read_text().splitlines()) for split in (*SPLITS, "train_domain_only")}
    assert counts == {"train": 40, "domain": 16, "heldout": 12, "replay": 6, "domain_dev": 4, "heldout_dev": 3,
                      "train_domain_only": 28}


@pytest.mark.slow
def test_the_demo_corpus_meets_the_protocol_sizes():
    """The corpus `make demo` and `make test` build (data/demo): 500+ domain utterances, as the protocol asks."""
    demo = Path(__file__).resolve().parent.parent / "data" / "demo"
    counts = {split: len((demo / f"{split}.jsonl").read_text().splitlines())
              for split in ("train", "domain", "heldout", "domain_dev", "heldout_dev")}
    assert counts["domain"] >= 500 and counts["heldout"] >= 300 and counts["train"] >= 1000, counts  # the test sets
    assert counts["domain_dev"] >= 150 and counts["heldout_dev"] >= 100, counts  # sized for choosing checkpoints
