"""Tiny random Whisper and Moonshine models built from configs (seconds to build, no downloads).

Whisper reuses the bundled model's real tokenizer and feature extractor; Moonshine gets a
character-level tokenizer made here. Weights are random: tests check mechanics (loss goes down,
resume, parity), never accuracy.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch


def tiny_whisper(out: Path, seed: int = 0) -> Path:
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    from lorakit.experiment.convert_ct2_whisper import bundled_model_dir

    src = bundled_model_dir()
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=51864, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448, pad_token_id=50256, bos_token_id=50257,
        eos_token_id=50256, decoder_start_token_id=50257, tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(config)
    _widen_embeddings(model)
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig.from_pretrained(src)
    model.save_pretrained(out, safe_serialization=True)
    WhisperProcessor.from_pretrained(src).save_pretrained(out)
    return out


def tiny_multilingual_whisper(out: Path, seed: int = 0) -> Path:
    """A tiny random Whisper with the multilingual vocabulary, tokenizer and generation config of
    bundled:whisper-base (language and task tokens), for tests of per-clip language prompts."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    from lorakit.experiment.convert_ct2_whisper import bundled_model_dir

    src = bundled_model_dir("bundled:whisper-base")
    torch.manual_seed(seed)
    config = WhisperConfig.from_pretrained(src)
    for key, value in dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=128, decoder_ffn_dim=128).items():
        setattr(config, key, value)
    model = WhisperForConditionalGeneration(config)
    _widen_embeddings(model)
    model.generation_config = GenerationConfig.from_pretrained(src)
    model.save_pretrained(out, safe_serialization=True)
    WhisperProcessor.from_pretrained(src).save_pretrained(out)
    return out


def _widen_embeddings(model) -> None:
    """Random tied embeddings at the usual 0.02 scale cap the logits near zero, so no adapter could
    lower the loss much; unit-scale embeddings give a random model room to learn."""
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 1.0)


def _char_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    chars = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,'?!-%/") + ["▁"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_moonshine(out: Path, seed: int = 0) -> Path:
    from transformers import MoonshineConfig, MoonshineForConditionalGeneration, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    torch.manual_seed(seed)
    tokenizer = _char_tokenizer()
    config = MoonshineConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, encoder_num_hidden_layers=2,
        decoder_num_hidden_layers=2, encoder_num_attention_heads=2, decoder_num_attention_heads=2,
        max_position_embeddings=256, decoder_start_token_id=1, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )
    model = MoonshineForConditionalGeneration(config)
    _widen_embeddings(model)
    model.generation_config.decoder_start_token_id = 1
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 3
    model.save_pretrained(out, safe_serialization=True)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False, return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(out)
    return out
