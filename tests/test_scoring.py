"""lorakit.scoring: the text WER is computed on, per language, and the normalizer a run records.

English text keeps Whisper's English rules (spellings, number words, contractions); French and German
text gets Whisper's basic rules, which keep accents and rewrite nothing English into it. Each test
that compares against the English normalizer would fail if every language were still scored with it.
"""

import json

import pytest
from helpers import cheap

from lorakit import RunConfig
from lorakit.experiment.evaluate import score
from lorakit.experiment.manifests import Utterance
from lorakit.scoring import BASIC_NORMALIZER, ENGLISH_NORMALIZER, normalize, normalizer_name, utterance_errors


def errors(ref: str, hyp: str, language: str) -> int:
    return utterance_errors(normalize(ref, language), normalize(hyp, language))["errors"]


def test_english_rules_are_unchanged():
    assert normalize("The colour of the centre!", "en") == "the color of the center"
    assert normalize("twenty five patients", "en") == "25 patients"
    assert normalize("I've got 25% of it", "en") == "i have got 25% of it"
    assert normalize("Don't stop.") == "do not stop"  # English is the default
    assert normalizer_name("en") == ENGLISH_NORMALIZER


@pytest.mark.parametrize("text, expected", [
    ("C'est l'été, n'est-ce pas ?", "c est l été n est ce pas"),  # accents kept; elisions and hyphens split
    ("L’homme a dit : « Bonjour ! »", "l homme a dit bonjour"),  # the typographic apostrophe as the straight one
    ("Le patient a vingt-cinq ans.", "le patient a vingt cinq ans"),  # no English number rewriting
    ("La couleur de l'œuvre — déjà vue…", "la couleur de l œuvre déjà vue"),  # œ kept, dashes and ellipses dropped
    ("Le colour du centre", "le colour du centre"),  # no British -> American table
    ("Un nodule de 2,9 centimètres", "un nodule de 2 9 centimètres"),  # a decimal comma splits, on both sides alike
])
def test_french_keeps_its_letters_and_loses_only_case_and_punctuation(text, expected):
    assert normalize(text, "fr") == expected
    assert normalizer_name("fr") == BASIC_NORMALIZER


@pytest.mark.parametrize("text, expected", [
    ("Die Straße ist schön, oder?", "die straße ist schön oder"),
    ("Er sagte: „Guten Tag!“", "er sagte guten tag"),
    ("Ich hab's gesehen.", "ich hab s gesehen"),  # the English rules made it "ich hab is gesehen"
    ("Das Kapitän-Büro hat 25 Mitarbeiter.", "das kapitän büro hat 25 mitarbeiter"),
    ("Donaudampfschifffahrtsgesellschaft", "donaudampfschifffahrtsgesellschaft"),  # a compound stays one word
    ("Größe (in cm): 180", "größe 180"),  # words in parentheses are dropped, as Whisper drops "(laughs)"
])
def test_german_keeps_umlauts_and_sharp_s(text, expected):
    assert normalize(text, "de") == expected
    assert normalizer_name("de") == BASIC_NORMALIZER


def test_the_english_normalizer_would_score_french_and_german_wrongly():
    """What the change fixes: English rules strip accents (schön == schon, "already"), turn ß into ss and
    rewrite "'s" and British spellings, so a wrong word counted as right, or French text lost its letters."""
    assert errors("Die Straße ist schön", "die strasse ist schon", "de") == 2
    assert errors("Die Straße ist schön", "die strasse ist schon", "en") == 0
    assert errors("Il est déjà là", "il est deja la", "fr") == 2
    assert errors("Il est déjà là", "il est deja la", "en") == 0
    assert normalize("C'est l'été", "fr") != normalize("C'est l'été", "en")


def test_elisions_and_compounds_count_as_basic_normalization_splits_them():
    """l'homme is two words (l, homme) on both sides, so a dropped elision is one deletion; a German compound
    written apart is a substitution and an insertion (the basic rules do not join or split words)."""
    assert errors("l'homme", "homme", "fr") == 1
    assert errors("l'homme", "l’homme", "fr") == 0
    assert errors("das Krankenhaus", "das Kranken Haus", "de") == 2


def test_score_normalizes_each_pair_for_the_text_language():
    utts = [Utterance(id="fr:1", audio_filepath="a.wav", text="Il est déjà là.", duration=1.0, speaker_id=None, line=1,
                     manifest="fr.jsonl")]
    (row,) = score(utts, ["il est deja la"], "fr").rows
    assert (row["ref_norm"], row["hyp_norm"], row["sub"]) == ("il est déjà là", "il est deja la", 2)
    (row,) = score(utts, ["il est deja la"], "en").rows
    assert row["sub"] == 0  # the same pair under the English rules, as every language was scored before


def test_a_run_records_its_normalizer_and_scores_with_it(tiny_cfg, tmp_path):
    """A real (tiny, smoke-sized) run: metrics.json says which normalizer its WERs are computed on, and
    every prediction row's normalized text is that normalizer's."""
    from lorakit.experiment.train import run

    result = run(RunConfig(**cheap(tiny_cfg, run_id="normalizer", output_dir=str(tmp_path / "runs"))))
    metrics = json.loads((result.folder / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["normalizer"] == ENGLISH_NORMALIZER
    rows = [json.loads(x) for x in (result.folder / "predictions" / "domain_best.jsonl").read_text().splitlines()]
    assert rows and all(r["ref_norm"] == normalize(r["ref"], "en") for r in rows)
