"""The French domain-only scenario (issue 28 item 3): a small real build with espeak-ng and sox."""

from __future__ import annotations

import json
import re

import pytest

from lorakit.cli import main as cli_main
from lorakit.demo import corpus, corpus_fr

SIZES = {"train_domain_only": 16, "domain": 10, "heldout": 8, "replay": 8, "domain_dev": 6, "heldout_dev": 6}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("fr")
    assert cli_main(["demo-data", "--language", "fr", "--out", str(out),
                     *[a for s, n in SIZES.items() for a in (f"--n-{s.replace('_', '-')}", str(n))]]) == 0
    return out


def _rows(folder, name):
    return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]


def test_the_french_scenario_has_its_splits_in_french_and_an_unlabeled_replay_pool(built):
    summary = json.loads((built / "corpus.json").read_text())
    assert summary["language"] == "fr" and summary["sizes"] == SIZES
    for split, n in SIZES.items():
        rows = _rows(built, split)
        assert len(rows) == n and {r["language"] for r in rows} == {"fr"}
        assert all((built / r["audio_filepath"]).is_file() and r["duration"] > 0.5 for r in rows)
    unlabeled, labeled = _rows(built, "replay_unlabeled"), _rows(built, "replay")
    assert not any("text" in r for r in unlabeled)
    assert [r["audio_filepath"] for r in unlabeled] == [r["audio_filepath"] for r in labeled]
    train_voices = {r["speaker_id"] for r in _rows(built, "train_domain_only")}
    heldout_voices = {r["speaker_id"] for s in ("heldout", "heldout_dev") for r in _rows(built, s)}
    assert not heldout_voices & (train_voices | {r["speaker_id"] for r in labeled})  # heldout voices heard nowhere else
    train_text = "\n".join(r["text"] for r in _rows(built, "train_domain_only") + labeled)
    assert not [t for t in summary["domain_only_terms"] if corpus.term_in(t, train_text)]


def test_same_seed_same_plan_and_a_rebuild_is_skipped(built):
    utts, _ = corpus_fr.plan_corpus_fr(0, {**corpus_fr.DEFAULT_SIZES, **SIZES})
    assert corpus.plan_sha256(utts) == json.loads((built / "corpus.json").read_text())["plan_sha256"]
    before = (built / "corpus.json").stat().st_mtime
    corpus_fr.build_corpus_fr(built, sizes=SIZES)
    assert (built / "corpus.json").stat().st_mtime == before


def test_french_sentences_elide_where_a_slot_needs_it():
    assert corpus_fr.elide("Arrêt de amoxicilline et de hémoglobine, de 8 jours") == \
        "Arrêt d'amoxicilline et d'hémoglobine, de 8 jours"
    utts, _ = corpus_fr.plan_corpus_fr(0, corpus_fr.DEFAULT_SIZES)
    texts = [u.text for u in utts]
    assert not [t for t in texts if re.search(r"\b(de|que) [aeiouyhéèê]", t, re.IGNORECASE)]
    assert not [t for t in texts if re.search(r"\b(à|de) le\b|\{", t)]  # no slot broke a contraction or stayed unfilled
