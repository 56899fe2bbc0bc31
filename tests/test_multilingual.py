"""`language` and `task` (issue 14): a Whisper trains on labels that start with exactly the prompt its
generation forces -- <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|> on a multilingual
model, <|startoftranscript|> <|notimestamps|> on an English-only one -- and English-only models refuse
anything but English transcription. The multilingual model is the bundled Whisper base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from lorakit.config import ConfigError, RunConfig

TEXT = "He might even have been made amiable himself."


def _decoder_inputs(sm, call) -> list[list[int]]:
    """The input_ids of every call into the Whisper decoder while `call()` runs."""
    seen: list[list[int]] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None:
            seen.append(ids[0].tolist())

    handle = sm.base.model.decoder.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        call()
    finally:
        handle.remove()
    return seen


def _clip(real_speech) -> tuple[list, str]:
    row = json.loads(Path(real_speech["real"]).read_text().splitlines()[4])  # librivox 0930, 3.3 s
    audio, _ = sf.read(str(Path(real_speech["real"]).parent / row["audio_filepath"]), dtype="float32")
    return audio, row["text"]


PROMPTS = [  # (model, language, task, the prompt generation forces)
    ("bundled:whisper-tiny.en", "en", "transcribe", [50257, 50362]),
    ("bundled:whisper-base", "en", "transcribe", [50258, 50259, 50359, 50363]),
    ("bundled:whisper-base", "fr", "transcribe", [50258, 50265, 50359, 50363]),
    ("bundled:whisper-base", "de", "translate", [50258, 50261, 50358, 50363]),
]


@pytest.mark.parametrize("name,language,task,expected", PROMPTS)
def test_ct2_export_prompt_is_the_runs_language_task_and_text_prompt(name, language, task, expected, bundled_whisper_base):
    """`lorakit export --to ct2` hands CTranslate2 the tokens transformers decodes a run with: its language
    and task on a multilingual Whisper (before: always <|en|> <|transcribe|>), after its text prompt."""
    from lorakit.deploy.ct2 import whisper_prompt
    from lorakit.experiment.models import load_model, prompt_token_ids

    sm = load_model(name, language=language, task=task)
    gc = sm.base.generation_config
    assert whisper_prompt(gc, language, task) == expected == list(sm.decoder_prompt)
    previous, uncut = prompt_token_ids(sm.processor, "ondansetron, metoprolol", sm.base.config.max_target_positions)
    assert previous[0] == sm.processor.tokenizer.convert_tokens_to_ids("<|startofprev|>") and uncut == len(previous) > 3
    assert whisper_prompt(gc, language, task, previous) == previous + expected


@pytest.mark.slow
@pytest.mark.parametrize("name,language,task,expected", PROMPTS)
def test_labels_start_with_the_prompt_generation_forces(name, language, task, expected, bundled_whisper_base, real_speech):
    from lorakit.experiment.features import Inputs
    from lorakit.experiment.manifests import Utterance
    from lorakit.experiment.models import load_model

    sm = load_model(name, language=language, task=task)
    sm.model.eval()
    audio, _ = _clip(real_speech)
    generated = _decoder_inputs(sm, lambda: sm.generate(sm.features([audio]), max_new_tokens=2))
    forced = generated[0]  # generation's first decoder call holds the whole forced prompt
    assert forced == expected == list(sm.decoder_prompt)
    labels = sm.label_ids(TEXT)
    assert labels[: len(forced) - 1] == forced[1:] and labels[-1] == sm.base.config.eos_token_id
    assert sm.processor.tokenizer.decode(labels[len(forced) - 1 :], skip_special_tokens=True).strip() == TEXT
    # what training feeds the decoder (labels shifted right behind the start token) begins the same way
    utt = Utterance(id="x", audio_filepath="x.wav", text=TEXT, duration=1.0, speaker_id="s", line=1, manifest="m.jsonl")
    batch = Inputs(sm, 0.075, None, torch.device("cpu")).labels([utt])
    with torch.no_grad():
        trained = _decoder_inputs(sm, lambda: sm.model(input_features=sm.features([audio])["input_features"], labels=batch))
    assert trained[0][: len(forced)] == forced


@pytest.mark.slow
def test_english_only_whisper_refuses_another_language_or_task():
    from lorakit.experiment.models import load_model

    with pytest.raises(ValueError, match=r"'bundled:whisper-tiny.en' is an English-only Whisper: .*'language' = 'fr'.*bundled:whisper-base"):
        load_model("bundled:whisper-tiny.en", language="fr")
    with pytest.raises(ValueError, match=r"English-only Whisper: .*'task' = 'translate'"):
        load_model("bundled:whisper-tiny.en", task="translate")


@pytest.mark.slow
def test_multilingual_whisper_names_an_unknown_language(bundled_whisper_base):
    from lorakit.experiment.models import load_model

    with pytest.raises(ValueError, match=r"'language' = 'xx' is not one of its languages \(af, am, ar, .*, zh\)"):
        load_model("bundled:whisper-base", language="xx")


def test_language_and_task_are_validated_parameters():
    assert (RunConfig().language, RunConfig().task) == ("en", "transcribe")
    with pytest.raises(ConfigError, match=r"parameter 'language' = 'English': a language code in lower case"):
        RunConfig(language="English")
    with pytest.raises(ConfigError, match=r"parameter 'task' = 'summarize': must be one of \('transcribe', 'translate'\)"):
        RunConfig(task="summarize")


@pytest.mark.slow
def test_a_short_lora_run_on_whisper_base_keeps_the_language_token(bundled_whisper_base, real_speech, tmp_path):
    """Two LoRA steps on real speech (four librivox and beckett clips), evaluated on two cards clips.
    The first step's loss is the model's ordinary transcription loss: measured 0.52 with the prompt in
    the labels, 6.75 with the labels as they were before issue 14 (<|notimestamps|> where the model
    expects <|en|>). The reloaded adapter still puts <|en|> first after <|startoftranscript|>, with most
    of the probability, on every training clip, and generation still forces the English prompt."""
    from transformers.modeling_outputs import BaseModelOutput

    from lorakit.deploy.transcribe import load_source, resolve_source
    from lorakit.experiment.train import run

    rows = [json.loads(x) for x in Path(real_speech["real"]).read_text().splitlines()]
    root = Path(real_speech["real"]).parent
    for row in rows:
        row["audio_filepath"] = str(root / row["audio_filepath"])
    train = [r for r in rows if r["speaker_id"] != "cards"][1:5]
    cards = [r for r in rows if r["speaker_id"] == "cards"][:2]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "domain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cards))
    cfg = RunConfig(model="bundled:whisper-base", language="en", train_manifest=str(tmp_path / "train.jsonl"),
                    domain_manifest=str(tmp_path / "domain.jsonl"), heldout_manifest="", max_steps=2, eval_interval=2,
                    batch_size=2, eval_batch_size=8, max_new_tokens=8, min_train_clips=4, lr=1e-3, warmup_ratio=0.0,
                    log_interval=1, verify_best=0, output_dir=str(tmp_path / "runs"), run_id="base-en",
                    replay_ratio=0.0, adapter_scales="1.0")  # the labels alone: no replay clips, no alpha grid
    result = run(cfg)
    assert result.metrics["status"] == "finished"
    assert json.loads((result.folder / "config.json").read_text())["config"]["language"] == "en"
    history = [json.loads(x) for x in (result.folder / "history.jsonl").read_text().splitlines()]
    first = next(h for h in history if h.get("kind") == "train" and h["step"] == 1)
    assert first["loss"] < 2.0, first

    sm = load_source(resolve_source(adapter=str(result.folder)))
    lora_b = [p for n, p in sm.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # the adapter did move
    sot, en = sm.decoder_prompt[0], sm.decoder_prompt[1]
    assert en == 50259
    for row in train:
        audio, _ = sf.read(row["audio_filepath"], dtype="float32")
        with torch.no_grad():
            hidden = BaseModelOutput(last_hidden_state=sm.encode(sm.features([audio])))  # decoder-only adapters
            logits = sm.model(encoder_outputs=hidden, decoder_input_ids=torch.tensor([[sot]])).logits[0, -1]
        p_en = torch.softmax(logits.float(), -1)[en].item()
        assert logits.argmax().item() == en and p_en > 0.5, (row["audio_filepath"], p_en)
    audio, _ = sf.read(train[0]["audio_filepath"], dtype="float32")
    assert _decoder_inputs(sm, lambda: sm.generate(sm.features([audio]), max_new_tokens=2))[0] == [50258, 50259, 50359, 50363]


# --- issue 31: every clip in its own language ----------------------------------------------------------

SOT, TRANSCRIBE, NO_TIMESTAMPS = 50258, 50359, 50363
LANGUAGE_IDS = {"en": 50259, "de": 50261, "fr": 50265}  # whisper-base's language tokens


@pytest.fixture(scope="module")
def multilingual_dir(tmp_path_factory, bundled_whisper_base) -> Path:
    from tiny import tiny_multilingual_whisper

    return tiny_multilingual_whisper(tmp_path_factory.mktemp("tiny_multilingual"))


def _decoder_calls(monkeypatch) -> list[tuple[bool, list[list[int]]]]:
    """(training?, input_ids rows) of every decoder call of the model `train.run` loads."""
    from lorakit.experiment import train

    calls: list[tuple[bool, list[list[int]]]] = []

    def load(*args, **kwargs):
        sm = load_model(*args, **kwargs)

        def hook(module, a, kw):
            if kw.get("input_ids") is not None:
                calls.append((module.training, kw["input_ids"].tolist()))

        sm.base.model.decoder.register_forward_pre_hook(hook, with_kwargs=True)
        return sm

    from lorakit.experiment.models import load_model
    monkeypatch.setattr(train, "load_model", load)
    return calls


def test_each_clip_trains_and_decodes_under_its_own_language_token(multilingual_dir, small_corpus, tmp_path, monkeypatch):
    """A real run (tiny random multilingual Whisper, real corpus files) in German whose train manifest marks
    every other row French, with the corpus's English replay under its own token: the decoder inputs of the
    first training batch carry each clip's own language token; the domain set (rows marked French) is decoded
    under <|fr|>, heldout (no marks) under the run's <|de|>; the record names each training language's share."""
    from helpers import absolute_lines, write_manifest

    from lorakit.experiment.batches import mixed_batches
    from lorakit.experiment.models import load_model
    from lorakit.experiment.prepare import prepare_data
    from lorakit.experiment.train import run

    train_rows = [{**r, "language": "fr"} if i % 2 else r for i, r in enumerate(absolute_lines(small_corpus["train"]))]
    write_manifest(tmp_path / "train.jsonl", train_rows)
    write_manifest(tmp_path / "domain.jsonl", [{**r, "language": "fr"} for r in absolute_lines(small_corpus["domain"])])
    assert all(json.loads(x)["language"] == "en" for x in small_corpus["replay"].read_text().splitlines())  # the corpus says so
    cfg = RunConfig(model=str(multilingual_dir), language="de", train_manifest=str(tmp_path / "train.jsonl"),
                    domain_manifest=str(tmp_path / "domain.jsonl"), heldout_manifest=str(small_corpus["heldout"]),
                    replay_manifest=str(small_corpus["replay"]), replay_ratio=0.5, cross_language_replay="own_token",
                    max_steps=1, eval_interval=1, batch_size=4, eval_batch_size=8, max_new_tokens=3, min_train_clips=8,
                    max_eval_utterances=4, verify_best=0, adapter_scales="1.0", warmup_ratio=0.0,
                    output_dir=str(tmp_path / "runs"), run_id="three-languages")
    calls = _decoder_calls(monkeypatch)
    result = run(cfg)
    assert result.metrics["status"] == "finished"

    sm = load_model(cfg.model, language="de")
    splits = prepare_data(cfg, sm.sampling_rate, sm)
    batch = next(mixed_batches(splits.train, splits.replay, 4, 2, cfg.seed))
    assert {u.language for u in batch[2:]} == {"en"} and len({u.language for u in splits.train}) == 2
    first_training = next(rows for training, rows in calls if training)
    assert [row[:4] for row in first_training] == [[SOT, LANGUAGE_IDS[u.language], TRANSCRIBE, NO_TIMESTAMPS] for u in batch]

    prompts = {tuple(rows[0][:4]) for training, rows in calls if not training and len(rows[0]) == 4}
    assert prompts == {(SOT, LANGUAGE_IDS["fr"], TRANSCRIBE, NO_TIMESTAMPS), (SOT, LANGUAGE_IDS["de"], TRANSCRIBE, NO_TIMESTAMPS)}
    for split, language in (("domain", "fr"), ("heldout", "de")):
        rows = [json.loads(x) for x in (result.folder / "predictions" / f"{split}_best.jsonl").read_text().splitlines()]
        assert rows and {r["language"] for r in rows} == {language}

    data = json.loads((result.folder / "metrics.json").read_text())["data"]
    n_fr = sum(u.language == "fr" for u in splits.train)
    assert data["training_languages"]["replay"] == {"en": {"clips": len(splits.replay), "share": 1.0}}
    assert data["training_languages"]["train"]["fr"]["clips"] == n_fr
    shares = data["training_languages"]["batches"]
    assert shares["en"] == 0.5 and shares["fr"] + shares["de"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("model", ["whisper_dir", "moonshine_dir"])
def test_an_english_only_model_refuses_a_french_clip_naming_file_and_line(model, request, small_corpus, tmp_path):
    from helpers import absolute_lines, write_manifest

    from lorakit.experiment.manifests import ManifestError
    from lorakit.experiment.models import load_model
    from lorakit.experiment.prepare import prepare_data

    rows = absolute_lines(small_corpus["train"])
    rows[2] = {**rows[2], "language": "fr"}
    write_manifest(tmp_path / "train.jsonl", rows)
    path = str(request.getfixturevalue(model))
    cfg = RunConfig(model=path, train_manifest=str(tmp_path / "train.jsonl"), domain_manifest=str(small_corpus["domain"]),
                    heldout_manifest="", replay_ratio=0.0, min_train_clips=8)
    sm = load_model(path)
    with pytest.raises(ManifestError) as err:
        prepare_data(cfg, sm.sampling_rate, sm)
    kind = "an English-only Whisper" if model == "whisper_dir" else "a Moonshine"
    assert str(err.value).startswith(f"{tmp_path / 'train.jsonl'}:3: field 'language': 'fr', but {path!r} is {kind}")
    assert "\n" not in str(err.value)


def test_a_rows_language_is_a_lower_case_code_named_by_file_line(tmp_path, small_corpus):
    from helpers import absolute_lines, write_manifest

    from lorakit.experiment.manifests import ManifestError, read_manifest

    rows = absolute_lines(small_corpus["domain"], 3)
    rows[1] = {**rows[1], "language": "French"}
    rows[2] = {**rows[2], "language": 7}
    write_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(ManifestError, match=r"m.jsonl:2: field 'language': 'French' is not a language code in lower case") as err:
        read_manifest(tmp_path / "m.jsonl")
    assert "m.jsonl:3: field 'language': expected a language code (a string), got number" in str(err.value)


def test_an_empty_replay_manifest_alone_turns_replay_off():
    """As an empty heldout_manifest skips heldout (before: "parameter 'replay_ratio' = 0.25: needs a replay_manifest")."""
    from lorakit.params import check_inputs_exist

    cfg = RunConfig(replay_manifest="")
    assert cfg.replay_ratio == 0.25 and cfg.replay_per_batch() == 0
    check_inputs_exist(cfg)  # no replay file is looked for
    with pytest.raises(ConfigError, match=r"'replay_ratio' = 0.05: must leave at least one replay"):
        RunConfig(replay_ratio=0.05)  # a ratio that rounds to no clip is still refused
    with pytest.raises(ConfigError, match=r"'cross_language_replay' = 'yes': must be one of \('refuse', 'own_token', 'run_token'\)"):
        RunConfig(cross_language_replay="yes")
    with pytest.raises(ConfigError, match=r"parameter 'replay_language' = 'EN': a language code in lower case"):
        RunConfig(replay_language="EN")


@pytest.mark.slow
def test_the_default_replay_in_a_french_run_is_refused_in_one_line_naming_the_choices(tmp_path):
    """The default recipe (the demo corpus, English replay at 0.25) on bundled whisper-base with `-p language fr`,
    through papermill in the smoke profile, as a user types it: one line, naming the three ways on."""
    import os
    import shutil
    import subprocess
    import sys

    import nbformat

    from lorakit.demo.corpus import build_corpus

    root = Path(__file__).resolve().parent.parent
    build_corpus(root / "data" / "demo")  # no-op when `make` already built it
    for name in ("notebooks", "params"):
        shutil.copytree(root / name, tmp_path / name)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(root / "data" / "demo", target_is_directory=True)
    (tmp_path / "executed").mkdir()
    env = {**os.environ, "LORAKIT_ROOT": str(tmp_path), "LORAKIT_SMOKE": "1"}
    papermill = str(Path(sys.executable).with_name("papermill"))
    proc = subprocess.run([papermill, "notebooks/train.ipynb", "executed/fr.ipynb", "-p", "model", "bundled:whisper-base",
                           "-p", "language", "fr"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0
    nb = nbformat.read(tmp_path / "executed" / "fr.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "ConfigError", proc.stderr[-2000:]
    message = errors[0]["evalue"]
    assert "\n" not in message
    assert message.startswith("parameter 'replay_manifest' = 'data/demo/replay.jsonl': 240 in en of its 240 clips")
    for choice in ('-p replay_manifest "" (no replay)', "-p replay_manifest <file> -p replay_language fr",
                   "-p cross_language_replay own_token (each clip under its own language token, <|en|>)"):
        assert choice in message
