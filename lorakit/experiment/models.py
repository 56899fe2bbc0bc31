"""Resolve and load a speech model, and put LoRA/DoRA adapters on it.

Two families are first-class: Whisper (log-mel input, fixed 30 s window) and Moonshine (raw audio,
variable length). Everything family-specific lives here: how audio becomes model input, how text
becomes labels, and how to generate.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bundled import BUNDLED_NAME, bundled_model_dir

BUNDLED_ALIASES = {BUNDLED_NAME, "bundled", "bundled:tiny.en", "whisper-tiny.en-bundled"}


@dataclass
class SpeechModel:
    """A loaded model with what is needed to feed it and read it."""

    model: Any  # transformers model, or a peft PeftModel wrapping it once adapters are added
    processor: Any
    family: str  # "whisper" | "moonshine"
    name: str  # as the user gave it
    path: str  # resolved local path or hub id

    @property
    def sampling_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def base(self):
        """The transformers model underneath any adapters (adapters stay injected and active)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    # --- inputs -------------------------------------------------------------------------
    def features(self, audio: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Model inputs for a batch of preprocessed (mono, resampled, normalized) clips.

        Always in fp32: Whisper's feature extractor computes its log-mels with torch on the CPU, and an
        enclosing CPU autocast (precision bf16 on a CPU) would make them bf16, which it cannot turn into numpy.
        """
        fe = self.processor.feature_extractor
        with torch.autocast("cpu", enabled=False):
            if self.family == "whisper":
                out = fe(audio, sampling_rate=self.sampling_rate, return_tensors="pt")
                return {"input_features": out.input_features}
            out = fe(audio, sampling_rate=self.sampling_rate, return_tensors="pt", padding=True, return_attention_mask=True)
        return {"input_values": out.input_values, "attention_mask": out.attention_mask}

    def label_ids(self, text: str) -> list[int]:
        """Token ids the decoder must produce for `text`, ending with end-of-text.

        The decoder start token is not included: the model prepends it when shifting labels right.
        Whisper's own transcripts begin with a space (" The ..."), so the label text does too.
        """
        tok = self.processor.tokenizer
        if self.family == "whisper":
            ids = tok(" " + text.strip()).input_ids  # <|startoftranscript|> <|notimestamps|> ... <|endoftext|>
            start = self.base.config.decoder_start_token_id
            return ids[1:] if ids and ids[0] == start else ids
        ids = tok(text.strip(), add_special_tokens=False).input_ids
        return ids + [self.base.config.eos_token_id]

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # --- frozen-encoder support -----------------------------------------------------------
    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder hidden states (Whisper only: fixed length, so they can be cached per clip).

        On a CPU the encoder runs one clip at a time: its 1500-position activations then stay in cache,
        and batch 1 measured 0.39 s/clip against 0.48 at 8 and 0.51 at 32 (whisper-tiny, 2 cores; the
        outputs are bit-identical). On a GPU the whole batch goes at once.
        """
        feats = inputs["input_features"]
        chunk = 1 if feats.device.type == "cpu" else len(feats)
        encoder = self.base.get_encoder()
        return torch.cat([encoder(feats[i : i + chunk]).last_hidden_state for i in range(0, len(feats), chunk)])

    @torch.no_grad()
    def generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int, encoder_hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy decoding with whatever adapters are injected, active (never merged or unwrapped)."""
        with _quiet_transformers():  # per-batch notices (max_length vs max_new_tokens, no attention mask) drown the output
            return self._generate(inputs, max_new_tokens, encoder_hidden)

    def _generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int, encoder_hidden: torch.Tensor | None) -> torch.Tensor:
        if self.family == "whisper":
            from transformers.modeling_outputs import BaseModelOutput

            if encoder_hidden is None:  # the encoder (adapters active) in `encode`'s chunks: one clip at a time on CPU
                encoder_hidden = self.encode(inputs)
            return self.model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
                max_new_tokens=max_new_tokens,
                num_beams=1,
                do_sample=False,
            )
        # Moonshine: about 6.5 tokens per second of audio at most, as its authors suggest
        seconds = inputs["attention_mask"].sum(-1).max().item() / self.sampling_rate
        limit = min(max_new_tokens, int(seconds * 6.5) + 8)
        return self.model.generate(**inputs, max_new_tokens=limit, num_beams=1, do_sample=False)


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def resolve_model(name: str) -> str:
    """A bundled name becomes the converted local directory; a local folder stays; else a hub id."""
    if name in BUNDLED_ALIASES:
        return str(bundled_model_dir())
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"model folder {p} has no config.json: not a transformers model directory")
        pickles = sorted(f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        if pickles and not any(p.glob("*.safetensors")):
            raise FileNotFoundError(
                f"model folder {p} holds only pickle weights ({', '.join(pickles)}): lorakit loads safetensors only, "
                "because unpickling can run arbitrary code. Convert it once where you trust the file: "
                "AutoModelForSpeechSeq2Seq.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)")
        return str(p.resolve())
    if name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder not found: {name}")
    return name  # a hub id: transformers downloads (or reads its cache); fails clearly when offline


def model_family(config) -> str:
    kind = getattr(config, "model_type", "")
    if kind == "whisper":
        return "whisper"
    if kind == "moonshine":
        return "moonshine"
    raise ValueError(f"unsupported model type {kind!r}: lorakit handles Whisper and Moonshine")


def load_model(name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> SpeechModel:
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq, AutoProcessor

    path = resolve_model(name)
    config = AutoConfig.from_pretrained(path)
    family = model_family(config)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(path, dtype=dtype, use_safetensors=True)
    processor = AutoProcessor.from_pretrained(path)
    if family == "whisper":
        gc = model.generation_config
        # English-only transcription without timestamps, whatever the checkpoint's defaults say
        if getattr(gc, "is_multilingual", False):
            gc.language, gc.task = "en", "transcribe"
        gc.return_timestamps = False
        gc.forced_decoder_ids = None
    model.to(device)
    return SpeechModel(model=model, processor=processor, family=family, name=name, path=path)


def discover_target_modules(model: torch.nn.Module, side: str = "") -> list[str]:
    """Every linear layer inside the transformer blocks (attention and MLP), optionally one side.

    Embeddings, convolutions and the output projection are left alone: they are large (the vocab
    projection) or shape the audio front-end that the adapters should not move.
    """
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or ".layers." not in name:
            continue
        if side and f"{side}." not in name:
            continue
        names.append(name)
    if not names:
        raise ValueError(f"no linear layers found for target_modules side={side!r}")
    return names


def resolve_target_modules(model: torch.nn.Module, spec: list[str]) -> list[str] | str:
    """'' -> all blocks; 'decoder'/'encoder' -> that side; else names or suffixes given to peft."""
    if not spec:
        return discover_target_modules(model)
    if spec in (["decoder"], ["encoder"]):
        return discover_target_modules(model, spec[0])
    linear_names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for item in spec:
        if not any(n == item or n.endswith("." + item) or re.fullmatch(item, n) for n in linear_names):
            raise ValueError(f"target_modules: {item!r} matches no linear layer of this model")
    return spec


def add_adapters(sm: SpeechModel, cfg, targets: list[str] | str | None = None) -> list[str]:
    """Wrap the model with a peft LoRA/DoRA adapter from the run config (on `targets` when already
    resolved by `resolve_target_modules`); returns the target names."""
    from peft import LoraConfig, get_peft_model

    targets = targets if targets is not None else resolve_target_modules(sm.model, cfg.target_module_list())
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        use_dora=cfg.use_dora,
        init_lora_weights=cfg.init_lora_weights,
        bias="none",
    )
    sm.model = get_peft_model(sm.model, lora)
    return list(targets)


def encoder_is_frozen(sm: SpeechModel) -> bool:
    """True when no trainable parameter lives in the encoder (decoder-only adapters)."""
    return not any(p.requires_grad for n, p in sm.model.named_parameters() if ".encoder." in n)


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training/eval, or None for plain fp32. Weights stay fp32 (adapters need it)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # CPU bf16 without AMX is slower than fp32 (measured ~5x on this AVX2 machine)
