"""`bundled:moonshine-tiny`: Moonshine tiny (English) from the `moonshine-voice` 0.0.49 package.

That package (MIT) ships the model as two ONNX Runtime (`.ort`) files, `assets/tiny-en/encoder_model.ort`
and `decoder_model_merged.ort`, with every matrix quantized to 8 bits per tensor (uint8 values, one
scale and one zero point) and layer norms, convolutions and biases in float32. We read them with the
flatbuffer reader that ships inside onnxruntime (`onnxruntime.tools.ort_format_model`), dequantize
each weight to float32 (`(q - zero_point) * scale`), and write a transformers directory
(MoonshineForConditionalGeneration + processor + generation config) once, into the cache root.

Which tensor is which comes from the graph, not from the initializer names (those are `onnx::MatMul_2096`):
the node that consumes a weight keeps the transformers module path, e.g.
`/model/decoder/layers.0/encoder_attn/k_proj/MatMul_quant` (the encoder's nodes drop the
`/model/encoder` prefix: `/layers.0/self_attn/q_proj/MatMul_quant`, `/conv1/Conv`). ONNX MatMul weights are
(in, out); transformers' Linear stores (out, in), so they are transposed. The tokenizer is the
transformers `tokenizer.json` for Moonshine that `useful-moonshine-onnx` ships (`moonshine-voice` has
only its own `tokenizer.bin`).

What the port cannot reproduce: onnxruntime also quantizes the *activations* that enter each
quantized MatMul to uint8, per tensor, on the fly (DynamicQuantizeLinear / DynamicQuantizeMatMul);
the converted model multiplies float32 activations by the dequantized weights. Its logits therefore
differ from onnxruntime's by that rounding (measured in tests/test_convert_ort_moonshine.py).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from ..env import cache_root
from ..display import progress_bar
from .converted import MARKER, assign_weights, write_converted

BUNDLED_MOONSHINE = "bundled:moonshine-tiny"
CONVERTER_VERSION = 1  # bump when the output layout changes, so caches are rebuilt
SOURCE_PACKAGE = "moonshine-voice==0.0.49"
ENCODER_FILE, DECODER_FILE = "encoder_model.ort", "decoder_model_merged.ort"

# ORT flatbuffer TensorDataType -> numpy (the types these two files use)
_ORT_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16}
_QUANT_MATMULS = {"MatMulIntegerToFloat": (1, 3, 5, 6), "DynamicQuantizeMatMul": (1, 2, 3, 4)}  # weight, scale, zero point, bias


def _package_dir(package: str, install: str) -> Path:
    """Where an installed package's files are, found without importing it (moonshine-voice's __init__
    would load its native runtime and audio-device modules, which a conversion does not need)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{BUNDLED_MOONSHINE} needs the '{install}' package: pip install '{install}' (or pip install 'lorakit[moonshine]')")
    return Path(spec.origin).parent


def source_dir() -> Path:
    """`assets/tiny-en` inside the installed `moonshine-voice` package (version 0.0.49: later ones ship no weights)."""
    path = _package_dir("moonshine_voice", SOURCE_PACKAGE) / "assets" / "tiny-en"
    if not (path / ENCODER_FILE).exists():
        raise RuntimeError(f"{path / ENCODER_FILE} is missing: {BUNDLED_MOONSHINE} needs '{SOURCE_PACKAGE}' exactly "
                           "(later versions download their weights instead of shipping them)")
    return path


def tokenizer_file() -> Path:
    """The transformers `tokenizer.json` for Moonshine inside the `useful-moonshine-onnx` package."""
    path = _package_dir("moonshine_onnx", "useful-moonshine-onnx") / "assets" / "tokenizer.json"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: the 'useful-moonshine-onnx' package no longer ships Moonshine's tokenizer.json")
    return path


class OrtGraph:
    """The initializers and nodes of an ORT-format model, subgraphs (the merged decoder's If branches) included.

    `tensors`: name -> numpy array; `nodes`: (op type, node name, input names, attributes) for every
    node of every graph. A weight in the decoder lives in the outer graph and is consumed in both
    branches; the node names repeat there, with the same inputs.
    """

    def __init__(self, path: str | Path):
        import onnxruntime.tools.ort_format_model  # noqa: F401  (puts its flatbuffer bindings on sys.path)
        import ort_flatbuffers_py.fbs as fbs

        self.path = Path(path)
        buf = bytearray(self.path.read_bytes())
        if not fbs.InferenceSession.InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0):
            raise ValueError(f"{self.path}: not an ONNX Runtime (.ort) model file")
        self._fbs = fbs
        self.tensors: dict[str, np.ndarray] = {}
        self.nodes: list[tuple[str, str, list[str], dict]] = []
        self._walk(fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(buf, 0).Model().Graph())

    def _walk(self, graph) -> None:
        for i in range(graph.InitializersLength()):
            t = graph.Initializers(i)
            self.tensors.setdefault(t.Name().decode(), self._array(t))
        graph_type = self._fbs.AttributeType.AttributeType.GRAPH
        for i in range(graph.NodesLength()):
            node = graph.Nodes(i)
            attrs = {}
            for j in range(node.AttributesLength()):
                a = node.Attributes(j)
                if a.Type() == graph_type:
                    self._walk(a.G())
                elif a.S() is not None:
                    attrs[a.Name().decode()] = a.S().decode()
            inputs = [node.Inputs(j).decode() for j in range(node.InputsLength())]
            self.nodes.append((node.OpType().decode(), node.Name().decode(), inputs, attrs))

    def _array(self, t) -> np.ndarray:
        name, dtype = t.Name().decode(), _ORT_DTYPES.get(t.DataType())
        if dtype is None:
            raise ValueError(f"{self.path}: initializer {name!r} has unsupported data type {t.DataType()}")
        if t.ExternalDataOffset() >= 0:
            raise ValueError(f"{self.path}: initializer {name!r} is stored as external data, which this reader does not follow")
        shape = tuple(int(d) for d in t.DimsAsNumpy()) if t.DimsLength() else ()
        raw = t.RawDataAsNumpy() if t.RawDataLength() else np.zeros(0, np.uint8)
        return np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape).copy()

    def dequantized(self, quantized: str, scale: str, zero_point: str) -> np.ndarray:
        """A per-tensor 8-bit weight as float32: (q - zero_point) * scale, as onnxruntime's DequantizeLinear."""
        q, s, z = self.tensors[quantized], self.tensors[scale], self.tensors[zero_point]
        if s.size != 1 or z.size != 1:
            raise ValueError(f"{self.path}: {quantized} is quantized per axis ({s.size} scales); expected per tensor")
        return ((q.astype(np.int32) - int(z.reshape(()))).astype(np.float32) * s.reshape(()).astype(np.float32))


def _module(node_name: str, prefix: str) -> str:
    """`/layers.0/self_attn/q_proj/MatMul_quant` -> `model.encoder.layers.0.self_attn.q_proj` (with prefix)."""
    path = node_name.strip("/").rsplit("/", 1)[0].replace("/", ".")
    return path if path.startswith(("model.", "proj_out")) else prefix + path


def _zero_bias(graph: OrtGraph, name: str, where: str) -> None:
    if name and graph.tensors.get(name) is not None and np.any(graph.tensors[name]):
        raise ValueError(f"{graph.path}: {where} has a non-zero bias {name!r}; Moonshine's layer norms have none")


def ort_to_hf_state_dict(graph: OrtGraph, prefix: str) -> dict[str, np.ndarray]:
    """transformers Moonshine keys -> float32 arrays, for one .ort file (prefix `model.encoder.` for the
    encoder, whose node names lack it). Each key is checked to come from one source only."""
    out: dict[str, np.ndarray] = {}
    sources: dict[str, tuple] = {}

    def put(key: str, array: np.ndarray, source: tuple) -> None:
        if key in sources and sources[key] != source:
            raise ValueError(f"{graph.path}: {key} is fed by two different tensors ({sources[key]} and {source})")
        sources[key], out[key] = source, np.ascontiguousarray(array, dtype=np.float32)

    for op, name, inputs, attrs in graph.nodes:
        if op in _QUANT_MATMULS and name.endswith("/MatMul_quant"):
            w, s, z, b = (inputs[i] if i < len(inputs) else "" for i in _QUANT_MATMULS[op])
            module = _module(name, prefix)
            put(f"{module}.weight", graph.dequantized(w, s, z).T, (w, s, z))
            if b:
                put(f"{module}.bias", graph.tensors[b], (b,))
        elif op == "LayerNormalization":
            _zero_bias(graph, inputs[2] if len(inputs) > 2 else "", name)
            put(f"{_module(name, prefix)}.weight", graph.tensors[inputs[1]], (inputs[1],))
        elif op == "SkipLayerNormalization":  # the encoder's final norm, fused with the last residual add
            _zero_bias(graph, inputs[3] if len(inputs) > 3 else "", name)
            put(f"{prefix}layer_norm.weight", graph.tensors[inputs[2]], (inputs[2],))
        elif op in ("Conv", "FusedConv"):
            if op == "FusedConv" and attrs.get("activation") != "Tanh":
                raise ValueError(f"{graph.path}: {name} fuses {attrs.get('activation')!r}; Moonshine's conv1 is followed by tanh")
            module = _module(name, prefix)
            put(f"{module}.weight", graph.tensors[inputs[1]], (inputs[1],))
            if len(inputs) > 2 and inputs[2]:
                put(f"{module}.bias", graph.tensors[inputs[2]], (inputs[2],))
        elif name in ("/groupnorm/Mul", "/groupnorm/Add"):  # GroupNorm(1 group) = InstanceNormalization, then * weight + bias
            kind = "weight" if name.endswith("Mul") else "bias"
            put(f"{prefix}groupnorm.{kind}", graph.tensors[inputs[1]].reshape(-1), (inputs[1],))
        elif name == "/model/decoder/embed_tokens/Gather":
            base = inputs[0].removesuffix("_quantized")
            put("model.decoder.embed_tokens.weight", graph.dequantized(inputs[0], base + "_scale", base + "_zero_point"), (inputs[0],))
    return out


def read_source(src: str | Path) -> dict[str, np.ndarray]:
    """Every transformers weight of Moonshine tiny, dequantized from the two .ort files in `src`."""
    src = Path(src)
    state = ort_to_hf_state_dict(OrtGraph(src / ENCODER_FILE), "model.encoder.")
    state.update(ort_to_hf_state_dict(OrtGraph(src / DECODER_FILE), "model.decoder."))
    return state


def _hf_config(state: dict[str, np.ndarray], tied: bool):
    """transformers' MoonshineConfig, its shapes read from the weights (its defaults are Moonshine tiny's)."""
    from transformers import MoonshineConfig

    def count(side: str) -> int:
        return len({k.split(".")[3] for k in state if k.startswith(f"model.{side}.layers.")})

    hidden = state["model.encoder.conv1.weight"].shape[0]
    config = MoonshineConfig(
        vocab_size=state["model.decoder.embed_tokens.weight"].shape[0],
        hidden_size=hidden,
        intermediate_size=state["model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        encoder_num_hidden_layers=count("encoder"),
        decoder_num_hidden_layers=count("decoder"),
        encoder_num_attention_heads=8,  # head_dim 36: the decoder's past_key_values inputs are [batch, 8, seq, 36]
        decoder_num_attention_heads=8,
        encoder_num_key_value_heads=8,
        decoder_num_key_value_heads=8,
        decoder_start_token_id=1,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=tied,
    )
    config.dtype = "float32"
    return config


def convert(src: str | Path, dst: str | Path, tokenizer_json: str | Path) -> Path:
    """Convert the .ort Moonshine tiny in `src` into a transformers directory `dst` (atomic)."""
    from transformers import (
        GenerationConfig,
        MoonshineForConditionalGeneration,
        PreTrainedTokenizerFast,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Processor,
    )

    started = time.perf_counter()
    src, dst = Path(src), Path(dst)
    steps = progress_bar(total=3, desc=f"convert {BUNDLED_MOONSHINE}", unit="step")  # read, build, write
    state = read_source(src)
    steps.update()
    # onnxruntime keeps the output projection as its own quantized copy; tie only if it is the embedding exactly
    tied = np.array_equal(state["proj_out.weight"], state["model.decoder.embed_tokens.weight"])
    if tied:
        del state["proj_out.weight"]
    config = _hf_config(state, tied)
    model = assign_weights(MoonshineForConditionalGeneration, config, state, str(src),
                           may_miss=["proj_out.weight"] if tied else [])
    if tied:
        model.tie_weights()
    model.generation_config = GenerationConfig(decoder_start_token_id=1, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                                               max_length=194)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="</s>")
    if len(tokenizer) != config.vocab_size:
        raise RuntimeError(f"{tokenizer_json}: {len(tokenizer)} tokens, the model's vocabulary has {config.vocab_size}")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False,
                                  return_attention_mask=True)
    steps.update()
    write_converted(dst, model, Wav2Vec2Processor(feature_extractor=fe, tokenizer=tokenizer), {
        "name": BUNDLED_MOONSHINE, "source": str(src), "package": SOURCE_PACKAGE, "converter_version": CONVERTER_VERSION,
        "tied_output_projection": tied, "conversion_s": round(time.perf_counter() - started, 2),
    }, copies={"source_tokenizer.json": Path(tokenizer_json)})
    steps.update()
    steps.close()
    return dst


class OrtReference:
    """The source model run by onnxruntime, as moonshine-voice runs it: the reference the port is checked
    against (greedy decoding with the merged decoder's key/value cache, batch 1, same stopping rule as lorakit)."""

    def __init__(self, src: str | Path | None = None):
        import onnxruntime

        src = Path(src) if src is not None else source_dir()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # deterministic, and polite on a shared machine
        self.encoder = onnxruntime.InferenceSession(str(src / ENCODER_FILE), options, providers=["CPUExecutionProvider"])
        self.decoder = onnxruntime.InferenceSession(str(src / DECODER_FILE), options, providers=["CPUExecutionProvider"])
        self.cache_names = [i.name for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self.kv_shape = next(i.shape for i in self.decoder.get_inputs() if i.name.startswith("past_key_values."))  # [batch, heads, seq, head_dim]

    def encode(self, audio: np.ndarray) -> np.ndarray:
        x = np.asarray(audio, dtype=np.float32)[None]
        return self.encoder.run(None, {"input_values": x, "attention_mask": np.ones_like(x, dtype=np.int64)})[0]

    def generate(self, audio: np.ndarray, max_new_tokens: int = 448) -> tuple[list[int], np.ndarray]:
        """(token ids starting with the decoder start token 1, the logits of every step)."""
        hidden = self.encode(audio)
        mask = np.ones((1, len(audio)), dtype=np.int64)
        heads, head_dim = self.kv_shape[1], self.kv_shape[3]
        cache = {n: np.zeros((1, heads, 0, head_dim), np.float32) for n in self.cache_names}
        limit = min(max_new_tokens, int(len(audio) / 16000 * 6.5) + 8)  # models.SpeechModel's rule for Moonshine
        tokens, logits = [1], []
        for step in range(limit):
            out = self.decoder.run(None, {"input_ids": np.array([[tokens[-1]]], dtype=np.int64), "encoder_hidden_states": hidden,
                                          "encoder_attention_mask": mask, "use_cache_branch": np.array([step > 0]), **cache})
            logits.append(out[0][0, -1])
            tokens.append(int(out[0][0, -1].argmax()))
            if tokens[-1] == 2:
                break
            for name, value in zip(self.cache_names, out[1:]):
                if step == 0 or ".decoder." in name:  # cross-attention keys/values come from the first step only
                    cache[name] = value
        return tokens, np.stack(logits)


def bundled_moonshine_dir(force: bool = False) -> Path:
    """The converted Moonshine tiny directory, converting on first use and reusing after."""
    dst = cache_root() / f"moonshine-tiny-ort-v{CONVERTER_VERSION}"
    if force or not (dst / MARKER).exists():
        convert(source_dir(), dst, tokenizer_file())
    return dst
