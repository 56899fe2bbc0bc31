"""Error breakdowns against hand counts (tests/fixtures/make_fixtures.py lists every error)."""

import pytest

from fixtures.records import TERMS, copy_runs, write_wavs
from lorakit.analysis import breakdown as bd
from lorakit.analysis import archive, matrix, runs, stats


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return {r.run_id: r for r in runs.load_runs(copy_runs(tmp_path_factory.mktemp("b") / "executed"))}


@pytest.fixture(scope="module")
def dora(loaded):
    return loaded["dora-r8-lr5e-5"]


def row(uid, ref, hyp, speaker="s1"):
    return {"id": uid, "speaker_id": speaker, "ref_norm": ref, "hyp_norm": hyp}


def test_sdi_counts_on_a_hand_example():
    rows = [row("a", "the cat sat on the mat", "the bat sat on mat"),  # 1 S, 1 D
            row("b", "hello world", "hello there big world")]  # 2 I
    c = bd.error_counts(rows)
    assert (c["sub"], c["del"], c["ins"], c["hits"], c["ref_words"]) == (1, 1, 2, 6, 8)
    assert c["wer"] == pytest.approx(4 / 8)
    assert bd.error_counts([])["wer"] is None


def test_sdi_counts_on_the_fixture_records(dora):
    base, best = dora.predictions("domain", "baseline"), dora.predictions("domain", "best")
    assert {k: bd.error_counts(base)[k] for k in ("sub", "del", "ins", "ref_words")} == {
        "sub": 17, "del": 3, "ins": 2, "ref_words": 120}
    assert {k: bd.error_counts(best)[k] for k in ("sub", "del", "ins")} == {"sub": 4, "del": 1, "ins": 1}
    # the per-utterance counts the record carries agree with the alignment
    per = {u["id"]: u for u in bd.utterance_table(base)}
    assert all(per[r["id"]]["errors"] == r["errors"] for r in base)


def test_speaker_wer_equals_the_hand_computation(dora):
    base = {s["speaker"]: s for s in bd.speaker_wer(dora.predictions("domain", "baseline"))}
    # spk_a: d01 2 + d02 1 + d03 2 + d04 2 = 7 of 40 words; spk_b: 1+2+2+2 = 7; spk_c: 2+3+2+1 = 8
    assert {k: s["wer"] for k, s in base.items()} == pytest.approx({"spk_a": 7 / 40, "spk_b": 7 / 40, "spk_c": 8 / 40})
    tuned = {s["speaker"]: (s["errors"], s["ref_words"]) for s in bd.speaker_wer(dora.predictions("domain", "best"))}
    assert tuned == {"spk_a": (2, 40), "spk_b": (1, 40), "spk_c": (3, 40)}
    # pooled over words, not averaged over utterances: 1 error in 2 words + 0 in 8 -> 1/10
    rows = [row("a", "a b", "a x", "s"), row("b", "c d e f g h i j", "c d e f g h i j", "s")]
    assert bd.speaker_wer(rows)[0]["wer"] == pytest.approx(0.1)


def test_confusions_count_substitutions_deletions_and_insertions(dora):
    top = bd.confusions(dora.predictions("domain", "baseline"), top=50)
    pairs = {(c["ref"], c["hyp"]): (c["kind"], c["count"]) for c in top}
    assert pairs[("metoprolol", "metro")] == ("S", 2)
    assert pairs[("echocardiogram", "echo")] == ("S", 2)
    assert pairs[("better", "*")] == ("D", 1)
    assert pairs[("*", "uh")] == ("I", 1)
    assert sum(c["count"] for c in top) == 22
    assert top[0]["count"] == 2 and len(bd.confusions(dora.predictions("domain", "baseline"), top=3)) == 3


def test_aligned_text_marks_errors_in_fixed_columns():
    a = bd.aligned("the cat sat on mat", "the bat sat on the mat")
    assert a.text() == ("REF: the CAT sat on *** mat\n"
                        "HYP: the BAT sat on THE mat\n"
                        "         S          I")
    ref, hyp, _ = bd.aligned("order an echocardiogram now", "order an echo").lines()
    assert ref == "order an ECHOCARDIOGRAM NOW"
    assert hyp == "order an ECHO           ***"
    html = bd.aligned("a b", "a c").html()
    assert 'class="lorakit-aligned"' in html and "REF: a" in html and ">C</span>" in html


def test_worst_utterances_rank_by_utterance_wer(dora):
    worst = bd.worst_utterances(dora.predictions("domain", "baseline"), n=3)
    assert [w["id"] for w in worst] == ["d10", "d01", "d03"]  # 3/10, then 2/10 by id
    assert "TOMORROW" in worst[0]["aligned"].text()


def test_worst_utterance_table_draws_each_clip(tmp_path):
    """Each worst utterance is shown with its clip's spectrogram beside the aligned text; a clip
    whose file is gone shows a note naming the path the predictions wrote."""
    run = runs.load_run(copy_runs(tmp_path / "executed") / "dora-r8-lr5e-5")
    write_wavs(tmp_path)
    (tmp_path / "data" / "demo" / "domain" / "d12.wav").unlink()
    b = bd.run_breakdown(run, "domain", top=5, audio_root=tmp_path)
    assert [w["id"] for w in b.worst] == ["d12", "d03", "d04", "d06", "d09"]
    html = b._repr_html_()
    table = html[html.index("Worst utterances (tuned)"):html.index("Utterances that changed")]
    assert table.count("<tr><td") == 5
    assert table.count("audio not found: data/demo/domain/d12.wav") == 1
    assert table.count('<img class="lorakit-spectrogram" src="data:image/png;base64,') == 4


def test_term_error_rates_from_the_alignment(dora):
    terms = bd.read_terms(TERMS)
    assert terms[0] == "amoxicillin clavulanate"  # "Amoxicillin-Clavulanate" normalized
    assert "warfarin" in terms  # comment lines skipped, terms kept
    base = {t["term"]: t for t in bd.term_errors(dora.predictions("domain", "baseline"), terms)}
    assert "warfarin" not in base  # never in the references
    assert (base["amoxicillin clavulanate"]["occurrences"], base["amoxicillin clavulanate"]["misses"]) == (2, 2)
    assert base["paracetamol"]["rate"] == 0.0
    assert base["tachycardia"]["heard_as"] == ["tachycardic", "tacky"]
    tuned = bd.term_errors(dora.predictions("domain", "best"), terms)
    assert tuned[0]["term"] == "echocardiogram" and tuned[0]["rate"] == 1.0  # still "echo" twice
    assert {t["term"]: t["rate"] for t in tuned}["amoxicillin clavulanate"] == 0.0
    # an insertion inside a multi-word term breaks it; one next to it does not
    rows = [row("a", "take amoxicillin clavulanate now", "take amoxicillin uh clavulanate now"),
            row("b", "amoxicillin clavulanate daily", "uh amoxicillin clavulanate daily")]
    t = bd.term_errors(rows, ["amoxicillin clavulanate"])[0]
    assert (t["occurrences"], t["misses"], t["heard_as"]) == (2, 1, ["amoxicillin uh clavulanate"])
    assert bd.read_terms(None) == [] and bd.read_terms("/no/such/file") == []


def test_utterance_changes_between_baseline_and_tuned(dora):
    changes = bd.utterance_changes(dora.predictions("domain", "baseline"), dora.predictions("domain", "best"))
    assert changes[0] == {"id": "d12", "speaker": "spk_c", "ref_words": 10, "before_errors": 1,
                          "after_errors": 2, "delta": 1, "change": "worse"}
    assert bd.change_summary(changes) == {"better": 11, "worse": 1, "same": 0, "net_errors": -16}
    assert changes[-1]["id"] == "d10" and changes[-1]["delta"] == -3
    with pytest.raises(stats.PredictionMismatch):
        bd.utterance_changes(dora.predictions("domain", "baseline")[:-1], dora.predictions("domain", "best"))


def test_run_breakdown_and_comparisons_between_runs(loaded, dora):
    terms = bd.read_terms(TERMS)
    reports = bd.run_breakdowns(list(loaded.values()), terms)
    # finished, non-archived runs only, each split with predictions
    assert sorted((b.run_id, b.split) for b in reports) == [
        ("dora-r8-lr5e-5", "domain"), ("dora-r8-lr5e-5", "heldout"),
        ("lora-r8-lr3e-4", "domain"), ("lora-r8-lr3e-4", "heldout")]
    b = next(r for r in reports if (r.run_id, r.split) == ("dora-r8-lr5e-5", "domain"))
    assert b.summary() == {"better": 11, "worse": 1, "same": 0, "net_errors": -16}
    assert [(s["speaker"], s["baseline_wer"], s["tuned_wer"]) for s in b.speakers][0] == ("spk_a", 0.175, 0.05)
    html = b._repr_html_()
    for title in ("Substitutions, deletions, insertions", "WER per speaker", "Most frequent confusions",
                  "Worst utterances", "Utterances that changed", "Domain terms"):
        assert title in html
    table = bd.error_table(reports)
    assert len(table) == 8 and table[0]["sub"] == 17
    # between runs, utterance by utterance: LoRA's best against DoRA's best
    diff = bd.compare_runs(dora, loaded["lora-r8-lr3e-4"], "domain")
    assert bd.change_summary(diff)["net_errors"] == 20 - 6
    assert "net +14 errors" in bd.compare_runs_html(list(loaded.values()), "dora-r8-lr5e-5,lora-r8-lr3e-4")
    assert "Name two or more runs" in bd.compare_runs_html(list(loaded.values()), "")
