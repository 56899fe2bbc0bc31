"""The "answered in another language" flag (issue 31): on prediction rows, then on a real run record
(tiny random multilingual Whisper, French run, real corpus files) through the matrix, its CSV and the
error browser."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lorakit.analysis.language_id import MIN_WORDS, flag_row, identify, other_language

FRENCH_REF = "Demain nous prenons le train pour Lyon avec les enfants."
ENGLISH_HYP = "Tomorrow we take the train to Lyon with the children."


def test_the_flag_fires_on_an_english_hypothesis_for_a_french_clip_and_not_on_the_french_one():
    english = {"id": "a", "ref": FRENCH_REF, "hyp": ENGLISH_HYP, "language": "fr"}
    french = {"id": "b", "ref": FRENCH_REF, "hyp": "Demain nous prenons le train pour Lyon avec les enfants", "language": "fr"}
    assert flag_row(english, "en") == {"id": "a", "expected": "fr", "identified": "en", "hyp": ENGLISH_HYP, "ref": FRENCH_REF}
    assert flag_row(french, "en") is None
    counts = other_language([english, french, {"id": "c", "hyp": "the end", "language": "fr"}], "en")
    assert (counts["n"], counts["judged"], counts["flagged"], counts["by_language"]) == (3, 2, 1, {"en": 1})
    # a row without `language` (records from before issue 31) is judged against the run's language
    assert flag_row({"id": "d", "hyp": ENGLISH_HYP}, "fr")["identified"] == "en"
    assert flag_row({"id": "d", "hyp": ENGLISH_HYP}, "en") is None


def test_short_texts_and_unknown_languages_are_not_judged():
    assert identify("the end of it", "fr") == "en" and MIN_WORDS == 4
    assert identify("the end", "fr") is None  # too short to tell
    assert identify(ENGLISH_HYP, "haw") is None  # a Whisper language the identifier does not know


@pytest.fixture(scope="module")
def french_run(tmp_path_factory, small_corpus, bundled_whisper_base) -> Path:
    """A real one-step run in French on the tiny multilingual Whisper; its heldout set's rows say French."""
    from helpers import absolute_lines, write_manifest
    from tiny import tiny_multilingual_whisper

    from lorakit.config import RunConfig
    from lorakit.experiment.train import run

    root = tmp_path_factory.mktemp("french_run")
    model = tiny_multilingual_whisper(root / "model")
    write_manifest(root / "heldout.jsonl", [{**r, "language": "fr"} for r in absolute_lines(small_corpus["heldout"])])
    cfg = RunConfig(model=str(model), language="fr", train_manifest=str(small_corpus["train"]),
                    domain_manifest=str(small_corpus["domain"]), heldout_manifest=str(root / "heldout.jsonl"),
                    replay_manifest="", max_steps=1, eval_interval=1, batch_size=2, eval_batch_size=8, max_new_tokens=3,
                    min_train_clips=8, max_eval_utterances=4, verify_best=0, adapter_scales="1.0",
                    output_dir=str(root / "runs"), run_id="fr")
    result = run(cfg)
    assert result.metrics["status"] == "finished"
    return result.folder


def test_the_matrix_counts_and_the_browser_lists_an_answer_in_english(french_run):
    """The real record's tuned heldout predictions, with one hypothesis replaced by an English sentence (what
    issue 31's runs produced): the matrix counts it base→tuned, the CSV has both numbers, the browser lists it."""
    from lorakit.analysis.browser import error_browser
    from lorakit.analysis.matrix import run_matrix
    from lorakit.analysis.runs import load_runs

    (run,) = load_runs(french_run.parent)
    path = run.predictions_path("heldout", "best")  # the reported set's (a test set when the defaults name one)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert {r["language"] for r in rows} == {"fr"}  # what evaluation wrote: the clip's language (here, the run's)
    dev = [json.loads(x) for x in (french_run / "predictions" / "heldout_best.jsonl").read_text().splitlines()]
    assert {r["language"] for r in dev} == {"fr"}  # the dev set's rows say it themselves
    rows[0]["hyp"] = ENGLISH_HYP
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    matrix = run_matrix(load_runs(french_run.parent), n_resamples=50)
    (row,) = matrix.rows
    assert row["heldout_other_language_baseline"] == 0 and row["heldout_other_language_tuned"] == 1
    assert row["domain_other_language_tuned"] == 0
    assert "heldout 0→1" in matrix.markdown() and "Other-language answers base→tuned" in matrix.markdown()
    matrix.write(french_run.parent)
    with open(french_run.parent / "run_matrix.csv") as f:
        (line,) = list(csv.DictReader(f))
    assert (line["Heldout other-language answers baseline"], line["Heldout other-language answers tuned"]) == ("0", "1")

    html = error_browser(french_run.parent, spectrograms=False).static_html()
    assert "fr · heldout: 1 tuned hypotheses answered in another language than the clip&#x27;s (baseline 0" in html
    assert ENGLISH_HYP in html and rows[0]["id"] in html
