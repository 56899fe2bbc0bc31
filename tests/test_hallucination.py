"""Hallucination flags (issue 15): repetition loops and runaway hypotheses on constructed rows, and the
per-run counts baseline against tuned on the fixture runs. Hypotheses cut at the token limit (issue 26):
read from the ids real models generate, warned about, and counted beside the flags in the matrix of a
run the kit really wrote; and the only transformers notices kept quiet around `generate`."""

import json
import logging

import numpy as np
import pytest
import torch
from helpers import cheap

from fixtures.records import copy_runs
from lorakit.analysis import hallucination as hal
from lorakit.analysis import matrix as matrix_mod
from lorakit.analysis import runs
from lorakit import RunConfig, scoring
from lorakit.experiment.evaluate import evaluate
from lorakit.experiment.features import Inputs
from lorakit.experiment.manifests import read_manifest
from lorakit.experiment.models import GENERATE_LOGGER, load_model, moonshine_token_limit, quiet_transformers


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
    # records written before the kit checked for cut hypotheses say nothing: "?", never a 0
    assert matrix.rows[0]["domain_truncated_tuned"] is None and "domain ?→?; heldout ?→?" in matrix.markdown()


# --- hypotheses cut at the token limit ---------------------------------------------------------------

def test_a_hypothesis_cut_at_the_token_limit_is_read_from_the_generated_ids(real_speech, capsys):
    """whisper-tiny.en on a real clip ("he was not an ill disposed young man", 10 tokens): it ends by
    itself under 64 new tokens, and is cut at 3, with a warning naming the clip and the limit."""
    utts = read_manifest(real_speech["real"]).utterances[1:2]
    sm = load_model("bundled:whisper-tiny.en")
    inputs = Inputs(sm, 0.075, None, torch.device("cpu"))
    whole = evaluate(sm, utts, inputs, batch_size=1, max_new_tokens=64, desc="whole")
    assert whole.rows[0]["cut_at_tokens"] is None and whole.rows[0]["del"] == 0
    assert "WARNING" not in capsys.readouterr().out
    cut = evaluate(sm, utts, inputs, batch_size=1, max_new_tokens=3, desc="cut")
    assert (cut.rows[0]["hyp"], cut.rows[0]["cut_at_tokens"]) == ("He was not", 3)
    assert f"WARNING: cut: 1 of 1 hypotheses cut at the token limit, with no end-of-text token (e.g. {utts[0].audio_filepath}: " \
           "3 new tokens; max_new_tokens 3)" in capsys.readouterr().out
    assert (hal.hallucinations(whole.rows)["truncated"], hal.hallucinations(cut.rows)["truncated"]) == (0, 1)


def test_moonshine_rows_padded_with_end_of_text_are_read_to_their_own_limit(moonshine_dir):
    """Moonshine decodes unequal clips one at a time and pads the shorter rows; the bundled Moonshine's pad
    token is its end-of-text, so a short clip cut at its own limit would look finished if its padding were read."""
    sm = load_model(str(moonshine_dir))
    sm.base.generation_config.pad_token_id = sm.base.generation_config.eos_token_id  # as bundled:moonshine-tiny has it
    rng = np.random.default_rng(0)
    feats = sm.features([rng.normal(0, 0.075, n).astype(np.float32) for n in (16_000, 8_000)])
    ids = sm.generate(feats, 40)
    assert ids[1, -1].item() == sm.base.generation_config.eos_token_id  # the short row's padding
    assert sm.cut_short(ids, feats, 40) == [moonshine_token_limit(1.0, 40), moonshine_token_limit(0.5, 40)] == [14, 11]


def test_a_real_run_counts_cut_hypotheses_beside_the_flags(tiny_cfg, tmp_path, capsys):
    """A smoke-sized run of the tiny random Whisper at max_new_tokens 2 (it never says end-of-text): every
    evaluation warns, the prediction rows say so, and the matrix counts them baseline -> tuned per set."""
    from lorakit.experiment.train import run

    result = run(RunConfig(**cheap(tiny_cfg, run_id="cut", max_new_tokens=2, output_dir=str(tmp_path / "runs"))))
    out = capsys.readouterr().out
    assert "WARNING: baseline domain: 4 of 4 hypotheses cut at the token limit" in out and "max_new_tokens 2)" in out
    row = matrix_mod.run_matrix([runs.load_run(result.folder)], n_resamples=100).rows[0]
    assert (row["domain_truncated_baseline"], row["domain_truncated_tuned"]) == (4, 4)
    assert matrix_mod.format_cell("truncated", row) == "domain 4→4"


def test_only_the_known_generate_notices_are_kept_quiet(whisper_dir):
    """The per-batch notices of `generate` stay out of the output; any other warning of transformers shows."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(GENERATE_LOGGER)
    logger.addHandler(handler)
    try:
        sm = load_model(str(whisper_dir))
        feats = sm.features([np.zeros(16_000, np.float32) + 0.01] * 2)
        sm.generate(feats, 2)
        assert not any("`max_new_tokens` will take precedence" in r.getMessage() for r in records)
        sm.base.generate(input_features=feats["input_features"], max_new_tokens=2)  # the checker sees it unfiltered
        assert any("`max_new_tokens` will take precedence" in r.getMessage() for r in records)
        with quiet_transformers():
            logger.warning("a warning lorakit has not vetted")
        assert records[-1].getMessage() == "a warning lorakit has not vetted"
    finally:
        logger.removeHandler(handler)
