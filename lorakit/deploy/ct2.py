"""The CTranslate2 form: a merged Whisper converted by the `ctranslate2` package's transformers
converter into `executed/<run_id>/export/ct2-<quantization>/`, loadable by
`faster_whisper.WhisperModel(path)` and by `ctranslate2.models.Whisper(path)`.

Decoding a CT2 folder here gets exactly the kit's input: `audio.load_audio` (mono, 16 kHz, RMS to the
run's target), the Whisper feature extractor the run used, the same length-sorted batches, the same
forced prompt tokens (the run's text prompt if it had one, then `<|startoftranscript|>`, language and
task for a multilingual model, `<|notimestamps|>`), greedy (beam 1), no
temperature fallback, no timestamps and the same limit of new tokens. `CT2SpeechModel` plugs into
`transcribe.decode_utterances` in place of the transformers model, so nothing in that path differs.

CTranslate2 caps Whisper's generation at `max_length / 2` new tokens (its whisper.cc follows
OpenAI's `sample_len = n_text_ctx // 2`), and, when the prompt holds previous text (<|startofprev|> ...),
also at `max_length - len(prompt) + 1`. So the kit's `max_new_tokens` N is passed as `max_length`
max(2N, N + len(prompt) - 1). Measured (ctranslate2 4.x, greedy): 256 -> 128 tokens, 21 -> 10 with the
2-token prompt; with a 19-token text prompt, 24 -> 6, 40 -> 20, 64 -> 32.

Moonshine cannot be exported: CTranslate2 has no Moonshine converter (its transformers converter
knows Whisper, not Moonshine's encoder with rotary attention over raw audio), so `export --to ct2`
refuses it with that reason; the merged form is Moonshine's shippable form.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..files import read_json
from ..experiment.models import SpeechModel
from .transcribe import TranscribeError

QUANTIZATIONS = ("float32", "float16", "int8")
FORM_PREFIX = "ct2-"
MOONSHINE_REFUSAL = ("CTranslate2 cannot run Moonshine: the ctranslate2 package has no Moonshine converter (its "
                     "transformers converter handles Whisper, not Moonshine's raw-audio encoder with rotary attention). "
                     "Export Moonshine with --to merged (a standalone transformers folder) instead")
INSTALL_HINT = "pip install 'lorakit[deploy]' (ctranslate2, faster-whisper)"


def form_name(quantization: str) -> str:
    if quantization not in QUANTIZATIONS:
        raise TranscribeError(f"--quantization {quantization}: CTranslate2 exports are {', '.join(QUANTIZATIONS)}")
    return FORM_PREFIX + quantization


def is_ct2_form(name: str) -> bool:
    return name.startswith(FORM_PREFIX)


def require_ctranslate2():
    try:
        import ctranslate2
    except ImportError as exc:
        raise TranscribeError(f"the CTranslate2 form needs the ctranslate2 package: {INSTALL_HINT}") from exc
    return ctranslate2


def whisper_prompt(gc, language: str = "en", task: str = "transcribe", previous: Sequence[int] = ()) -> list[int]:
    """The tokens transformers decodes after, as `load_model` configures a Whisper generation config:
    the run's text prompt (<|startofprev|> ..., when it had one), start of transcript, then the run's
    language and task for a multilingual model, then no-timestamps."""
    ids = [*map(int, previous), int(gc.decoder_start_token_id)]
    if getattr(gc, "is_multilingual", False):
        ids += [int(gc.lang_to_id[f"<|{language}|>"]), int(gc.task_to_id[task])]
    return ids + [int(gc.no_timestamps_token_id)]


def ct2_max_length(max_new_tokens: int, prompt_length: int = 2) -> int:
    """The `max_length` that lets CTranslate2 generate `max_new_tokens` after a prompt of that many tokens (module docstring)."""
    return max(2 * int(max_new_tokens), int(max_new_tokens) + int(prompt_length) - 1)


def convert(merged: Path, dst: Path, quantization: str, processor) -> None:
    """Convert the merged transformers folder into `dst` (a staging folder), then add what
    faster-whisper reads beside model.bin: tokenizer.json and preprocessor_config.json (transformers 5
    keeps the feature extractor inside processor_config.json, which faster-whisper does not read)."""
    from ctranslate2.converters import TransformersConverter

    if not (merged / "tokenizer.json").exists():
        raise TranscribeError(f"{merged}: no tokenizer.json; faster-whisper needs it (re-export --to merged)")
    TransformersConverter(str(merged)).convert(str(dst), quantization=quantization, force=True)
    processor.save_pretrained(dst)  # tokenizer.json, tokenizer_config.json, processor_config.json
    processor.feature_extractor.to_json_file(str(dst / "preprocessor_config.json"))
    shutil.copy2(merged / "generation_config.json", dst / "generation_config.json")


@dataclass
class CT2SpeechModel(SpeechModel):
    """A CTranslate2 Whisper that `transcribe.decode_utterances` drives like a transformers model:
    `features` and `decode` are SpeechModel's (the run's feature extractor and tokenizer), `generate`
    runs CTranslate2 on the same features with the same prompt, greedy."""

    prompt: list[int] = field(default_factory=list)

    @property
    def base(self):
        return self.model  # no transformers generation config: long clips are cut in windows

    @torch.no_grad()
    def generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int, encoder_hidden=None) -> list[list[int]]:
        import ctranslate2

        feats = np.ascontiguousarray(inputs["input_features"].float().cpu().numpy())
        results = self.model.generate(ctranslate2.StorageView.from_array(feats), [self.prompt] * len(feats), beam_size=1,
                                      max_length=ct2_max_length(max_new_tokens, len(self.prompt)), sampling_topk=1, suppress_blank=True,
                                      suppress_tokens=[-1], return_scores=False)
        return [r.sequences_ids[0] for r in results]


def load_ct2(path: str | Path, threads: int | None = None, device: str = "cpu") -> CT2SpeechModel:
    """A CT2 export folder with its processor and the prompt recorded in preprocessing.json. `threads`
    (default: torch's) makes CTranslate2 use as many CPU threads as the PyTorch forms it is compared with."""
    ct2 = require_ctranslate2()
    from transformers import WhisperProcessor

    path = Path(path)
    pre_path = path / "preprocessing.json"
    if not (path / "model.bin").exists() or not pre_path.exists():
        raise TranscribeError(f"{path}: not a lorakit CTranslate2 export (needs model.bin and preprocessing.json)")
    pre = read_json(pre_path)
    prompt = pre.get("prompt_tokens")
    if not prompt:
        raise TranscribeError(f"{pre_path}: field 'prompt_tokens' is missing or empty (re-export with --to ct2)")
    model = ct2.models.Whisper(str(path), device=device, compute_type="default",
                               intra_threads=int(threads or torch.get_num_threads()), inter_threads=1)
    processor = WhisperProcessor.from_pretrained(str(path))
    return CT2SpeechModel(model=model, processor=processor, family="whisper", name=str(path), path=str(path), prompt=list(prompt),
                          language=str(pre.get("language") or "en"), task=str(pre.get("task") or "transcribe"))
