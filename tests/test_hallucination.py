"""Hallucination flags (issue 15): repetition loops and runaway hypotheses on constructed rows, and the
per-run counts baseline against tuned on the fixture runs."""

import json

from fixtures.records import copy_runs
from lorakit.analysis import hallucination as hal
from lorakit.analysis import matrix as matrix_mod
from lorakit.analysis import runs
from lorakit import scoring


def _row(ref, hyp, uid="u1"):
    return {"id": uid, "ref": ref, "hyp": hyp, "ref_norm": ref.lower(), "hyp_norm": hyp.lower()}


def test_longest_loop_finds_the_ngram_repeated_most_in_a_row():
    assert scoring.longest_loop("a b c a b c a b c d".split()) == (("a", "b", "c"), 3)
    assert scoring.longest_loop("x y y y y z".split()) == (("y",), 4)
    assert scoring.longest_loop([]) == ((), 0)
    assert scoring.longest_loop("one two three".split()) == (("one",), 1)


def test_loops_and_runaways_are_flagged_and_ordinary_hypotheses_are_not():
    ref = "start amoxicillin twice daily"
    assert hal.flag_hypothesis(_row(ref, "start amoxicillin twice a day")) is None
    loop = hal.flag_hypothesis(_row(ref, "start amoxicillin twice daily daily daily daily daily"))
    assert loop["kinds"] == ["loop"] and loop["loop"] == "daily" and loop["repeats"] == 5
    bigram = hal.flag_hypothesis(_row(ref, "thank you thank you thank you thank you"))
    assert bigram["loop"] == "thank you" and bigram["repeats"] == 4
    assert hal.flag_hypothesis(_row(ref, "thank you thank you thank you thank you"), loop_min_repeats=5) is None
    # 4 reference words: more than 2 x 4 + 5 = 13 hypothesis words runs away
    long = " ".join(f"w{i}" for i in range(14))
    assert hal.flag_hypothesis(_row(ref, long))["kinds"] == ["runaway"]
    assert hal.flag_hypothesis(_row(ref, " ".join(f"w{i}" for i in range(13)))) is None
    assert hal.flag_hypothesis(_row(ref, long), runaway_ratio=3.0) is None
    both = hal.flag_hypothesis(_row(ref, "la " * 20))
    assert both["kinds"] == ["loop", "runaway"] and both["hyp_words"] == 20


def test_a_loop_the_reference_has_is_not_a_hallucination():
    ref = "no no no no that is wrong"
    assert hal.flag_hypothesis(_row(ref, ref)) is None
    assert hal.flag_hypothesis(_row(ref, "no no no no no no that is wrong"))["repeats"] == 6


def test_counts_and_worst_examples():
    rows = [_row("a b c", "a b c", "ok"), _row("a b c", "a b c c c c c", "loop"),
            _row("a b", "a b " + " ".join(f"w{i}" for i in range(20)), "runaway"),
            _row("a b", "la " * 30, "both")]
    counts = hal.hallucinations(rows, top=2)
    assert (counts["n"], counts["flagged"], counts["loops"], counts["runaways"]) == (4, 3, 2, 2)
    assert [f["id"] for f in counts["worst"]] == ["both", "runaway"]  # most excess words first


def test_runs_count_baseline_against_tuned_in_the_matrix(tmp_path):
    runs_dir = copy_runs(tmp_path / "executed")
    best = runs_dir / "dora-r8-lr5e-5" / "predictions" / "domain_best.jsonl"
    rows = [json.loads(line) for line in best.read_text().splitlines()]
    rows[0]["hyp"] = rows[0]["hyp_norm"] = "start " + "twice daily " * 6
    best.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = runs.load_run(runs_dir / "dora-r8-lr5e-5")
    counts = hal.run_hallucinations(run)
    assert counts["domain"]["baseline"]["flagged"] == 0 and counts["domain"]["tuned"]["flagged"] == 1
    assert counts["domain"]["tuned"]["worst"][0]["loop"] == "twice daily"
    assert hal.format_counts(counts) == "domain 0→1; heldout 0→0"
    matrix = matrix_mod.run_matrix([run], n_resamples=100)
    assert "domain 0→1; heldout 0→0" in matrix.markdown()
    assert "| d01 | loop |" in hal.worst_markdown(matrix.rows)
    assert matrix_mod.run_matrix([run], n_resamples=100, loop_min_repeats=7).rows[0]["domain_hallucinations_tuned"] == 0
    assert "No hypothesis flagged" in hal.worst_markdown([])
