"""Resolve and load a speech model, and put LoRA/DoRA adapters on it.

Two families are first-class: Whisper (log-mel input, fixed 30 s window) and Moonshine (raw audio,
variable length). Everything family-specific lives here: how audio becomes model input, how text
becomes labels, and how to generate.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .convert_ct2_whisper import OTHER_BUNDLED, bundled_model_dir, bundled_spec


def prompt_token_ids(processor, text: str, max_target_positions: int) -> tuple[list[int], int]:
    """Whisper's previous-text prompt for `text`: <|startofprev|> and the text's tokens, cut to the limit
    (half the decoder positions, less one; its first tokens kept). Returns the ids and the uncut length.
    Generation in transformers (`prompt_ids`) and the CTranslate2 export both feed exactly these."""
    ids = [int(t) for t in processor.get_prompt_ids(text, return_tensors="np")]
    return ids[:max_target_positions // 2 - 1], len(ids)


@dataclass
class SpeechModel:
    """A loaded model with what is needed to feed it and read it."""

    model: Any  # transformers model, or a peft PeftModel wrapping it once adapters are added
    processor: Any
    family: str  # "whisper" | "moonshine"
    name: str  # as the user gave it
    path: str  # resolved local path or hub id
    decoder_prompt: tuple[int, ...] = ()  # Whisper: the tokens generation starts the decoder with (`configure_whisper_generation`)
    prompt_ids: torch.Tensor | None = None  # Whisper: previous-text prompt (<|startofprev|> ...) fed to every generation
    language: str = "en"  # the spoken language it decodes (the run's `language`)
    task: str = "transcribe"  # transcribe | translate

    def set_prompt(self, text: str) -> dict:
        """Feed `text` as Whisper's previous-text prompt (`prompt_ids`) to every generation from now on; "" removes it.
        A prompt longer than Whisper's limit (half the decoder positions, less one) keeps its first tokens.
        Returns what the record keeps: the text used, its token count and whether it was cut."""
        if not text:
            self.prompt_ids = None
            return {}
        if self.family != "whisper":
            raise ValueError(f"parameter 'prompt': only Whisper takes a text prompt, not {self.family} ({self.name})")
        ids, uncut = prompt_token_ids(self.processor, text, self.base.config.max_target_positions)
        self.prompt_ids = torch.tensor(ids).to(self.base.device)
        used = self.processor.tokenizer.decode(ids[1:], skip_special_tokens=True)
        return {"text": used, "tokens": len(ids) - 1, "cut_from_tokens": uncut - 1 if uncut > len(ids) else None}

    @property
    def text_language(self) -> str:
        """The language of the text it writes, which WER is normalized for: English when translating."""
        return "en" if self.task == "translate" else self.language

    @property
    def sampling_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def input_seconds(self) -> float | None:
        """The longest clip the model sees whole: Whisper's fixed window (its feature extractor pads
        or cuts every clip to `n_samples`, 30 s); None for Moonshine, which takes any length."""
        if self.family != "whisper":
            return None
        return self.processor.feature_extractor.n_samples / self.sampling_rate

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

    def language_problem(self, language: str | None) -> str | None:
        """Why this model cannot take a clip spoken in `language` (None: it can). A multilingual Whisper takes
        any of its languages; an English-only Whisper or a Moonshine decodes one language, the run's."""
        if language is None or language == self.language:
            return None
        if self.family == "whisper" and len(self.decoder_prompt) > 2:  # <|startoftranscript|> <|lang|> <|task|> ...
            if f"<|{language}|>" in (getattr(self.base.generation_config, "lang_to_id", None) or {}):
                return None
            return f"{language!r} is not one of the languages of {self.name!r}"
        kind = "an English-only Whisper" if self.family == "whisper" else "a Moonshine (one language per model)"
        return (f"{language!r}, but {self.name!r} is {kind}: it has no language token and decodes only the run's "
                f"{self.language!r}; use a multilingual Whisper such as bundled:whisper-base")

    def prompt_for(self, language: str | None = None) -> tuple[int, ...]:
        """The decoder prompt for a clip spoken in `language` (None: the run's): `decoder_prompt` with that
        language's token in place of the run's, on a multilingual Whisper. Raises ValueError where
        `language_problem` names one."""
        problem = self.language_problem(language)
        if problem:
            raise ValueError(problem)
        if language is None or language == self.language:
            return self.decoder_prompt
        token = self.base.generation_config.lang_to_id[f"<|{language}|>"]
        return (self.decoder_prompt[0], token, *self.decoder_prompt[2:])

    def label_ids(self, text: str, language: str | None = None) -> list[int]:
        """Token ids the decoder must produce for `text` spoken in `language` (None: the run's), ending with end-of-text.

        Whisper: the prompt generation forces (`prompt_for(language)`: <|fr|> <|transcribe|> on a multilingual
        model for a French clip, then <|notimestamps|>), then the text, then <|endoftext|>; training and
        decoding see one prompt. The decoder start token is not included: the model prepends it when shifting
        labels right. Whisper's own transcripts begin with a space (" The ..."), so the label text does too.
        """
        tok = self.processor.tokenizer
        if self.family == "whisper":
            text_ids = tok(" " + text.strip(), add_special_tokens=False).input_ids
            return [*self.prompt_for(language)[1:], *text_ids, self.base.config.eos_token_id]
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
    def generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int, encoder_hidden: torch.Tensor | None = None,
                 language: str | None = None) -> torch.Tensor:
        """Greedy decoding with whatever adapters are injected, active (never merged or unwrapped), of clips
        spoken in `language` (None: the run's; another one is forced on a multilingual Whisper only)."""
        self.prompt_for(language)  # a language the model cannot take fails here, as it does in the labels
        with quiet_transformers():  # only the known per-batch notices (KNOWN_GENERATE_NOTICES): they would drown the output
            return self._generate(inputs, max_new_tokens, encoder_hidden, None if language == self.language else language)

    def _generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int, encoder_hidden: torch.Tensor | None,
                  language: str | None = None) -> torch.Tensor:
        if self.family == "whisper":
            from transformers.modeling_outputs import BaseModelOutput

            if encoder_hidden is None:  # the encoder (adapters active) in `encode`'s chunks: one clip at a time on CPU
                encoder_hidden = self.encode(inputs)
            extra = {} if self.prompt_ids is None else {"prompt_ids": self.prompt_ids}  # the output leaves the prompt out
            if language is not None:  # this call only: the generation config keeps the run's language
                extra["language"] = language
            return self.model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
                max_new_tokens=max_new_tokens,
                num_beams=1,
                do_sample=False,
                **extra,
            )
        # Moonshine's GroupNorm (after its first convolution) averages over every frame, padding included,
        # so a padded clip is heard differently in a batch than alone (bundled:moonshine-tiny: 4 of 16 synthesized
        # hypotheses changed at batch 8). Clips of unequal length are decoded one at a time, unpadded.
        mask = inputs["attention_mask"]
        if bool(mask.all()):
            return self._moonshine_generate(inputs, max_new_tokens)
        rows = [self._moonshine_generate({"input_values": x[m.bool()][None], "attention_mask": m[m.bool()][None]}, max_new_tokens)
                for x, m in zip(inputs["input_values"], mask)]
        width, pad = max(r.shape[1] for r in rows), self.base.generation_config.pad_token_id
        return torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=pad) for r in rows])

    def _moonshine_generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> torch.Tensor:
        seconds = inputs["attention_mask"].sum(-1).max().item() / self.sampling_rate
        return self.model.generate(**inputs, max_new_tokens=moonshine_token_limit(seconds, max_new_tokens), num_beams=1, do_sample=False)

    def cut_short(self, ids: torch.Tensor, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> list[int | None]:
        """Per row of `generate`'s output for `inputs`: the new-token limit its decoding ran into (the
        hypothesis is cut short: as many tokens as the limit, none of them end-of-text), else None.
        Whisper's limit is `max_new_tokens`; Moonshine's the per-clip `moonshine_token_limit`. A row is
        read up to its first end-of-text or pad token (Whisper pads with end-of-text, and so does Moonshine
        a batch of unequal clips; transformers' Whisper output leaves out the prompt and the final
        end-of-text, Moonshine's starts with the decoder start token)."""
        stop = {self.base.generation_config.eos_token_id, self.base.generation_config.pad_token_id}
        stop = {t for x in stop for t in (x if isinstance(x, (list, tuple)) else [x]) if t is not None}
        if self.family == "whisper":
            rows, limits = ids.tolist(), [max_new_tokens] * len(ids)
        else:
            rows = [row[1:] for row in ids.tolist()]
            limits = [moonshine_token_limit(s, max_new_tokens) for s in (inputs["attention_mask"].sum(-1) / self.sampling_rate).tolist()]
        own = [next((i for i, t in enumerate(row) if t in stop), len(row)) for row in rows]  # tokens before end-of-text
        return [limit if n >= limit else None for n, limit in zip(own, limits)]


def moonshine_token_limit(seconds: float, max_new_tokens: int) -> int:
    """New tokens Moonshine may generate for `seconds` of audio: about 6.5 per second at most, as its
    authors suggest (+ 8), and never more than `max_new_tokens`."""
    return min(max_new_tokens, int(seconds * 6.5) + 8)


# What `generate` says on every batch about how this kit calls it, not about the audio or the model:
# max_new_tokens beside the generation config's max_length (passed on purpose), no attention mask for
# Whisper's fixed-length encoder output (nothing is padded), Whisper's own generate passing its suppress
# tokens beside a generation config. Only these are dropped; every other warning of transformers shows.
KNOWN_GENERATE_NOTICES = (
    "`max_new_tokens` will take precedence",
    "The attention mask is not set with a batched input",
    "The attention mask and the pad token id were not set",
    "Passing `generation_config` together with generation-related arguments",
)
GENERATE_LOGGER = "transformers.generation.utils"  # where transformers logs those notices


class _KnownNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in KNOWN_GENERATE_NOTICES)


@contextmanager
def quiet_transformers():
    """Drop transformers' known per-batch notices about `generate` (KNOWN_GENERATE_NOTICES) while the
    block runs; any other warning, deprecation or error it logs still shows."""
    logger, notices = logging.getLogger(GENERATE_LOGGER), _KnownNotices()
    logger.addFilter(notices)
    try:
        yield
    finally:
        logger.removeFilter(notices)


def resolve_model(name: str) -> str:
    """A bundled name becomes the converted local directory; a local folder stays; else a hub id."""
    if bundled_spec(name) is not None:
        return str(bundled_model_dir(name))
    if name in OTHER_BUNDLED:
        return str(OTHER_BUNDLED[name]())
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


def load_model(name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               language: str = "en", task: str = "transcribe") -> SpeechModel:
    """Load a Whisper or Moonshine model for `language` and `task`: a multilingual Whisper is prompted
    with them; an English-only Whisper refuses anything but en / transcribe; Moonshine has no prompt
    (one language per model) and refuses `translate`."""
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq, AutoProcessor

    path = resolve_model(name)
    config = AutoConfig.from_pretrained(path)
    family = model_family(config)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(path, dtype=dtype, use_safetensors=True)
    processor = AutoProcessor.from_pretrained(path)
    prompt: tuple[int, ...] = ()
    if family == "whisper":
        prompt = configure_whisper_generation(model.generation_config, model.config, name, language, task)
    elif task != "transcribe":
        raise ValueError(f"model {name!r} (Moonshine) only transcribes: parameter 'task' = {task!r} needs a multilingual Whisper")
    model.to(device)
    return SpeechModel(model=model, processor=processor, family=family, name=name, path=path, decoder_prompt=prompt,
                       language=language, task=task)


def is_multilingual_whisper(gc, config) -> bool:
    """A Whisper generation config that takes a language and a task (OpenAI's rule when the config does
    not say: the multilingual vocabulary has 51865 entries, the English-only one 51864)."""
    flag = getattr(gc, "is_multilingual", None)
    return bool(flag) if flag is not None else config.vocab_size >= 51865


def configure_whisper_generation(gc, config, name: str, language: str, task: str) -> tuple[int, ...]:
    """Set `gc` (a Whisper GenerationConfig, in place) to decode `language` / `task` without timestamps,
    and return the decoder prompt its generation forces: <|startoftranscript|> [<|lang|> <|task|>]
    <|notimestamps|> (the bracket on multilingual models only). `label_ids` starts labels with the same
    prompt; a test compares both with what `generate` actually emits."""
    if is_multilingual_whisper(gc, config):
        languages = getattr(gc, "lang_to_id", None) or {}
        token = f"<|{language}|>"
        if token not in languages:
            known = ", ".join(sorted(t.strip("<|>") for t in languages))
            raise ValueError(f"model {name!r}: parameter 'language' = {language!r} is not one of its languages ({known})")
        tasks = getattr(gc, "task_to_id", None) or {}
        if task not in tasks:
            raise ValueError(f"model {name!r}: parameter 'task' = {task!r} is not one of its tasks ({', '.join(sorted(tasks))})")
        gc.language, gc.task = language, task
        middle = [languages[token], tasks[task]]
    else:
        if language != "en" or task != "transcribe":
            raise ValueError(f"model {name!r} is an English-only Whisper: it cannot take parameter 'language' = {language!r} / "
                             f"'task' = {task!r} (only 'en' / 'transcribe'); use a multilingual Whisper such as bundled:whisper-base")
        gc.language = gc.task = None  # English-only generate refuses both
        middle = []
    gc.return_timestamps = False
    gc.forced_decoder_ids = None
    return (gc.decoder_start_token_id, *middle, gc.no_timestamps_token_id)


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


ADAPTABLE = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)  # layer types peft's LoRA wraps


@dataclass(frozen=True)
class TargetPlan:
    """Which layers the adapters will sit on, known before they exist (the baseline and the encoder
    cache are set up first): `spec` is what peft receives as `target_modules`, `modules` the names
    peft's own matching picks from the base model, `encoder_frozen` whether none of them is in the encoder."""

    spec: list[str] | str
    modules: tuple[str, ...]
    encoder_frozen: bool


def resolve_target_modules(model: torch.nn.Module, spec: list[str] | str) -> list[str] | str:
    """[] -> every block's linear layers; ['decoder'] / ['encoder'] -> that side's; a str is a regex
    (peft full-matches it against module names); else names or name suffixes, each of which must match."""
    if isinstance(spec, str):
        return spec
    if not spec:
        return discover_target_modules(model)
    if spec in (["decoder"], ["encoder"]):
        return discover_target_modules(model, spec[0])
    for item in spec:
        if not peft_matches(model, [item]):
            raise ValueError(f"target_modules: {item!r} matches no layer of this model")
    return spec


def peft_matches(model: torch.nn.Module, spec: list[str] | str) -> list[str]:
    """The module names that peft will adapt for `target_modules=spec`: its own matching function."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    probe = LoraConfig(target_modules=spec)
    return [name for name, _ in model.named_modules() if name and check_target_module_exists(probe, name)]


def plan_targets(model: torch.nn.Module, spec: list[str] | str) -> TargetPlan:
    """Resolve `spec` (RunConfig.target_module_spec) and match it the way peft will, on the base model."""
    resolved = resolve_target_modules(model, spec)
    modules = peft_matches(model, resolved)
    if not modules:
        raise ValueError(f"target_modules: {spec!r} matches no layer of this model")
    kinds = dict(model.named_modules())
    odd = [f"{n} ({type(kinds[n]).__name__})" for n in modules if not isinstance(kinds[n], ADAPTABLE)]
    if odd:
        raise ValueError(f"target_modules: {spec!r} matches {len(odd)} module(s) that are not layers LoRA can adapt "
                         f"(linear, embedding, convolution), e.g. {', '.join(odd[:3])}; narrow the pattern")
    encoder = _encoder_prefix(model)
    frozen = encoder is None or not any(n == encoder or n.startswith(encoder + ".") for n in modules)
    return TargetPlan(spec=resolved, modules=tuple(modules), encoder_frozen=frozen)


def _encoder_prefix(model: torch.nn.Module) -> str | None:
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
    return next((name for name, m in model.named_modules() if m is encoder), None)


def lora_config(cfg, targets: list[str] | str):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        use_dora=cfg.use_dora,
        init_lora_weights=cfg.init_lora_weights,
        bias="none",
    )


def add_adapters(sm: SpeechModel, cfg, plan: TargetPlan | None = None) -> TargetPlan:
    """Wrap the model with a peft LoRA/DoRA adapter from the run config, on `plan` (from `plan_targets`,
    made before the adapters exist) or the config's targets; checks that peft adapted exactly the
    planned modules, and returns the plan."""
    from peft import get_peft_model

    plan = plan if plan is not None else plan_targets(sm.model, cfg.target_module_spec())
    sm.model = get_peft_model(sm.model, lora_config(cfg, plan.spec))
    adapted = set(sm.model.targeted_module_names)
    if adapted != set(plan.modules) or encoder_is_frozen(sm) != plan.encoder_frozen:
        raise RuntimeError(f"internal: peft adapted {len(adapted)} modules ({sorted(adapted ^ set(plan.modules))[:3]} differ) "
                           f"where {len(plan.modules)} were planned (encoder frozen: planned {plan.encoder_frozen})")
    return plan


def encoder_is_frozen(sm: SpeechModel) -> bool:
    """True when no adapter layer and no trainable parameter lives in the encoder (decoder-only adapters).

    Decided from the layers peft actually wrapped, not from `requires_grad` alone: an adapter loaded
    for inference (`is_trainable=False`) still changes the encoder's output."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    encoder = sm.base.get_encoder() if hasattr(sm.base, "get_encoder") else None
    if encoder is None:
        return True
    return not any(isinstance(m, BaseTunerLayer) for m in encoder.modules()) and not any(p.requires_grad for p in encoder.parameters())


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
