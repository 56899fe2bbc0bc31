"""The offline default model: CTranslate2 export -> transformers, tensor for tensor, and it hears."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lorakit.experiment import convert_ct2_whisper


@pytest.fixture(scope="module")
def converted():
    from transformers import WhisperForConditionalGeneration

    path = convert_ct2_whisper.bundled_model_dir()
    return path, WhisperForConditionalGeneration.from_pretrained(path).eval()


def assert_every_tensor_is_its_source(model, source: dict) -> dict:
    """Every weight of the converted Whisper equals its CTranslate2 source tensor (float16 widened
    exactly), and the output projection is tied to the token embedding, as in the CTranslate2 alias.
    Returns the mapped source tensors."""
    mapped = convert_ct2_whisper.ct2_to_hf_state_dict(source)
    state = model.state_dict()
    assert set(mapped) | {"proj_out.weight"} == set(state)
    for name, array in mapped.items():
        assert torch.equal(state[name], torch.from_numpy(array.astype(np.float32))), name
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    return mapped


def test_every_converted_tensor_equals_its_source(converted):
    _, model = converted
    source = convert_ct2_whisper.read_ct2_model(convert_ct2_whisper.source_dir() / "model.bin")
    mapped = assert_every_tensor_is_its_source(model, source)
    # fused q/k/v were split on the output axis: q is the first third, v the last
    fused = source["encoder/layer_0/self_attention/linear_0/weight"]
    assert np.array_equal(mapped["model.encoder.layers.0.self_attn.q_proj.weight"], fused[:384])
    assert np.array_equal(mapped["model.encoder.layers.0.self_attn.v_proj.weight"], fused[768:])
    # Whisper's key projections have no bias; CTranslate2 stores zeros there
    assert not source["encoder/layer_0/self_attention/linear_0/bias"][384:768].any()


def test_reader_rejects_a_foreign_file(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x05\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="version 5"):
        convert_ct2_whisper.read_ct2_model(bad)


def test_conversion_is_cached(converted):
    path, _ = converted
    marker = path / "lorakit_bundled.json"
    before = marker.stat().st_mtime_ns
    assert convert_ct2_whisper.bundled_model_dir() == path
    assert marker.stat().st_mtime_ns == before


def test_generation_config_is_english_without_timestamps(converted):
    _, model = converted
    gc = model.generation_config
    assert gc.is_multilingual is False and gc.return_timestamps is False
    assert gc.no_timestamps_token_id == 50362 and gc.decoder_start_token_id == 50257
    assert 50357 in gc.suppress_tokens and gc.begin_suppress_tokens == [220, 50256]


def test_bundled_model_transcribes_a_flite_recording(tmp_path):
    from lorakit.scoring import normalize
    from lorakit.experiment.manifests import read_manifest
    from lorakit.experiment.models import load_model
    from lorakit.experiment.features import Inputs

    sentence = "The weather is nice today, so we should take a walk in the park."
    wav = tmp_path / "slt.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", sentence, "-o", str(wav)], check=True)
    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "slt.wav", "text": "%s"}\n' % sentence)
    utts = read_manifest(tmp_path / "m.jsonl").utterances
    sm = load_model(convert_ct2_whisper.BUNDLED_NAME)
    from lorakit.experiment.evaluate import evaluate

    result = evaluate(sm, utts, Inputs(sm, 0.075, None, torch.device("cpu")), batch_size=1, max_new_tokens=64)
    print(result.rows[0]["hyp"])
    assert result.wer <= 0.10, (result.rows[0]["hyp"], normalize(sentence))


# --- bundled:whisper-base: multilingual, its model.bin in two packages ---------------------------------

BASE = "bundled:whisper-base"


@pytest.fixture(scope="module")
def base_source():
    return convert_ct2_whisper.read_ct2_model(*convert_ct2_whisper.source_parts(BASE))


def test_every_converted_whisper_base_tensor_equals_its_source(bundled_whisper_base, base_source):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(bundled_whisper_base).eval()
    mapped = assert_every_tensor_is_its_source(model, base_source)
    c = model.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.vocab_size) == (512, 6, 6, 51865)
    fused = base_source["decoder/layer_5/attention/linear_1/weight"]  # cross-attention k and v, stacked
    assert np.array_equal(mapped["model.decoder.layers.5.encoder_attn.k_proj.weight"], fused[:512])
    assert np.array_equal(mapped["model.decoder.layers.5.encoder_attn.v_proj.weight"], fused[512:])
    marker = json.loads((bundled_whisper_base / "lorakit_bundled.json").read_text())
    assert marker["name"] == BASE and [Path(p).name for p in marker["parts"]] == ["model.bin.part1", "model.bin.part2"]


def test_whisper_base_pieces_must_be_joined_in_order():
    first, second = convert_ct2_whisper.source_parts(BASE)
    with pytest.raises(ValueError, match=r"model\.bin\.part2 \+ .*model\.bin\.part1: CTranslate2 model format version"):
        convert_ct2_whisper.read_ct2_model(second, first)
    with pytest.raises(ValueError, match=r"model\.bin\.part1: variable .* the file ends at .*pieces missing"):
        convert_ct2_whisper.read_ct2_model(first)


def test_whisper_base_generation_config_is_multilingual(bundled_whisper_base):
    from transformers import GenerationConfig

    gc = GenerationConfig.from_pretrained(bundled_whisper_base)
    assert gc.is_multilingual is True and gc.return_timestamps is False
    assert (gc.decoder_start_token_id, gc.eos_token_id, gc.no_timestamps_token_id) == (50258, 50257, 50363)
    assert len(gc.lang_to_id) == 99 and gc.lang_to_id["<|en|>"] == 50259 and gc.lang_to_id["<|fr|>"] == 50265
    assert gc.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert gc.begin_suppress_tokens == [220, 50257]


def test_bundled_names_and_aliases_resolve_to_their_own_folders(bundled_whisper_base):
    from lorakit.experiment.models import resolve_model

    assert Path(resolve_model("bundled:base")).name == bundled_whisper_base.name == "whisper-base-ct2-v1"
    assert Path(resolve_model("bundled")).name == "whisper-tiny.en-ct2-v1"
    with pytest.raises(ValueError, match="not a bundled model; bundled models: bundled:whisper-tiny.en, bundled:whisper-base"):
        convert_ct2_whisper.bundled_model_dir("bundled:whisper-huge")
