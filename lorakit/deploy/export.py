"""Export a run's adapter as a form a user ships, under `executed/<run_id>/export/<form>/`, each
written atomically with `preprocessing.json` (what the audio must look like before the feature
extractor, and how to decode) and a README.md that shows how to feed it:

- `merged`: peft `merge_and_unload` into the base, saved as a standalone transformers folder with its
  processor and generation config;
- `ct2-<quantization>` (float32, float16, int8): that merged folder converted by CTranslate2's
  transformers converter (`ct2.py`), loadable by `faster_whisper.WhisperModel(path)`. Whisper only.

`export` ends with the parity report over every form in `export/` made from this adapter.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..files import atomic_folder, read_json, write_json
from ..record import now
from ..experiment.audio import SAMPLE_RATE
from ..experiment.features import PREPROCESSING_VERSION
from ..experiment.models import model_family, prompt_token_ids, resolve_model
from . import ct2
from .parity import faster_whisper_causes, parity_report
from .transcribe import Source, TranscribeError, load_source, resolve_source

FORMS = ("merged", "ct2")

README = """# {run}: merged export

A standalone transformers model: the base `{model}` with the LoRA/DoRA adapter `{adapter}` merged
into its weights (`peft merge_and_unload`). No peft needed to load it.

The model was trained and evaluated on audio that was mono, resampled to {sr} Hz and scaled to an
RMS of {rms} (linear amplitude) -- feed it the same (`preprocessing.json`):

```python
import numpy as np, soundfile as sf, soxr, torch
from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

model = AutoModelForSpeechSeq2Seq.from_pretrained("{folder}").eval()
processor = AutoProcessor.from_pretrained("{folder}")
x, rate = sf.read("clip.wav", dtype="float32", always_2d=True)
x = x.mean(axis=1)                                    # mono
if rate != {sr}: x = soxr.resample(x, rate, {sr})     # {sr} Hz
x = x * ({rms} / max(np.sqrt(np.mean(x.astype(np.float64) ** 2)), 1e-8))  # RMS {rms}
features = processor(x, sampling_rate={sr}, return_tensors="pt")
ids = model.generate(**features, max_new_tokens={max_new_tokens}, num_beams=1, do_sample=False{generate_extra})
print(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
```

Or through the kit, with the run's adapter unmerged (the parity report finds the same hypotheses; `--model`
on this folder would decode with the kit's default token limit and no text prompt, not the run's):

```bash
lorakit transcribe --adapter {adapter} clip.wav
```

A Whisper window holds 30 s: for longer clips the kit uses transformers' long-form generation on the
whole normalized clip (`processor(x, truncation=False, padding="longest", return_attention_mask=True)`,
then `generate(..., return_timestamps=True)`).
"""


CT2_README = """# {run}: CTranslate2 export ({quantization})

The base `{model}` with the LoRA/DoRA adapter `{adapter}` merged into its weights, converted by
CTranslate2's transformers converter with `quantization={quantization}`. Load it with
`faster_whisper.WhisperModel("{folder}")` or `ctranslate2.models.Whisper("{folder}")`.

The model was trained and evaluated on audio that was mono, resampled to {sr} Hz and scaled to an
RMS of {rms} (linear amplitude) -- feed it the same (`preprocessing.json`). With faster-whisper, pass
the normalized samples (not the file name: faster-whisper would decode the file itself, without the
RMS scaling), padded with silence to one 30 s window, and turn off what the kit does not do:

```python
import json
import numpy as np, soundfile as sf, soxr
from faster_whisper import WhisperModel

x, rate = sf.read("clip.wav", dtype="float32", always_2d=True)
x = x.mean(axis=1)                                    # mono
if rate != {sr}: x = soxr.resample(x, rate, {sr})     # {sr} Hz
x = (x * ({rms} / max(np.sqrt(np.mean(x.astype(np.float64) ** 2)), 1e-8))).astype(np.float32)  # RMS {rms}
model = WhisperModel("{folder}", device="cpu", compute_type="default")
padded = np.pad(x, (0, max(0, {sr} * 30 - len(x))))  # zeros as audio: the padding is silence, as in training
segments, _ = model.transcribe(padded, language="{language}", task="{task}", beam_size=1, temperature=0.0,{initial_prompt}
                               without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
                               no_speech_threshold=None, max_new_tokens={fw_max_new_tokens},
                               suppress_tokens=json.load(open("{folder}/generation_config.json"))["suppress_tokens"])
print(" ".join(s.text.strip() for s in segments))
```

Why each setting (`../parity.md` has this export's faster-whisper rows: this call, faster-whisper's
defaults, and the defaults with VAD, each against the kit's hypotheses):
- the padding: faster-whisper pads a short clip's log-mels with zeros, which the model never saw in
  training (transformers pads the audio, so the padding reads as silence); this moves hypotheses;
- `no_speech_threshold=None`: otherwise a window with a high no-speech probability and a low mean
  log-probability is dropped whole; the kit never drops one;
- `max_new_tokens={fw_max_new_tokens}`: CTranslate2 generates at most half of `max_length`, and faster-whisper
  passes `max_length = len(prompt) + max_new_tokens`, so this gives the run's {max_new_tokens} new tokens;
- `suppress_tokens`: the model's own list, which CTranslate2 (and the kit) suppress; faster-whisper's
  default (`[-1]`) is its own list of symbols, the same for the bundled Whispers but not for every model;
- greedy, one temperature, no timestamps, no previous text, no VAD: how the run decoded. Clips over
  30 s go through faster-whisper's own long-form seeking (timestamps on there) and are not padded.

faster-whisper still computes its own log-mels (a numpy copy of Whisper's). To decode exactly as the kit's
parity report did -- the transformers feature extractor, the prompt tokens {prompt} and greedy search --
call CTranslate2 directly (CTranslate2 generates at most `max_length // 2` tokens, and after a text prompt at most
`max_length - len(prompt) + 1`, hence {ct2_max_length}
for the run's {max_new_tokens} new tokens):

```python
import ctranslate2
from transformers import WhisperProcessor

processor = WhisperProcessor.from_pretrained("{folder}")
model = ctranslate2.models.Whisper("{folder}", device="cpu")
features = processor(x, sampling_rate={sr}, return_tensors="np").input_features   # x as above
result = model.generate(ctranslate2.StorageView.from_array(features), [{prompt}], beam_size=1,
                        max_length={ct2_max_length})
print(processor.tokenizer.decode(result[0].sequences_ids[0], skip_special_tokens=True).strip())
```

Or through the kit, which does exactly this with the run's adapter, unmerged: the hypotheses the
parity report (`../parity.md`) compares this form with.

```bash
lorakit transcribe --adapter {adapter} clip.wav
```
"""


def adapter_digest(folder: Path) -> str:
    """sha256 over the adapter's config and weights: which adapter an export was made from."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.name == "adapter_config.json" or f.name.startswith("adapter_model")):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def export_dir(src: Source, form: str) -> Path:
    """`<run>/export/<form>/`, or `<adapter>/../export/<form>/` for a bare adapter folder."""
    base = src.run_folder if src.run_folder is not None else src.adapter.parent
    return base / "export" / form


def preprocessing(src: Source, family: str) -> dict:
    return {"sampling_rate": SAMPLE_RATE, "channels": "mono (mean of channels)", "rms_target": src.rms_target,
            "resampler": "soxr (default quality)", "preprocessing_version": PREPROCESSING_VERSION, "family": family,
            "language": src.language, "task": src.task, "prompt": src.prompt, "timestamps": False, "max_new_tokens": src.max_new_tokens,
            "decoding": "greedy (num_beams=1)", "window_s": 30.0}


def _export_record(src: Source, form: str, **extra) -> dict:
    return {**src.describe(), "form": form, "adapter_sha256": adapter_digest(src.adapter), "exported": now(), **extra}


def _run_name(src: Source) -> str:
    return src.run_folder.name if src.run_folder else src.adapter.name


def export_merged(src: Source, dst: Path | None = None) -> Path:
    """Merge the adapter into the base and save a standalone folder (atomically) at `dst`."""
    if src.adapter is None:
        raise TranscribeError("export needs an adapter (a run id, a run folder or an adapter folder)")
    sm = load_source(src, "cpu")
    merged = sm.model.merge_and_unload()
    dst = Path(dst) if dst is not None else export_dir(src, "merged")
    with atomic_folder(dst) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        sm.processor.save_pretrained(tmp)
        merged.generation_config.save_pretrained(tmp)
        write_json(tmp / "preprocessing.json", preprocessing(src, sm.family))
        write_json(tmp / "export.json", _export_record(src, "merged"))
        (tmp / "README.md").write_text(README.format(
            run=_run_name(src), model=src.model, adapter=src.adapter, sr=SAMPLE_RATE, rms=src.rms_target, folder=dst,
            max_new_tokens=src.max_new_tokens, generate_extra=_generate_extra(src, merged.generation_config)))
    return dst


def _generate_extra(src: Source, gc) -> str:
    """What the merged README's generate call adds to decode as the run did: its language and task
    (multilingual Whisper only) and its text prompt."""
    extra = f', language="{src.language}", task="{src.task}"' if getattr(gc, "is_multilingual", False) else ""
    if src.prompt:
        extra += f",\n                     prompt_ids=processor.get_prompt_ids({src.prompt!r}, return_tensors='pt')"
    return extra


def is_current(folder: Path, src: Source) -> bool:
    """Whether an export folder was made from this very adapter (its export.json's adapter_sha256)."""
    record = folder / "export.json"
    return record.exists() and read_json(record).get("adapter_sha256") == adapter_digest(src.adapter)


def merged_folder(src: Source) -> Path:
    """The merged form of this adapter: the existing `export/merged/` when it was made from it, else a new one."""
    folder = export_dir(src, "merged")
    return folder if is_current(folder, src) else export_merged(src)


def export_ct2(src: Source, quantization: str = "int8") -> Path:
    """Convert the merged model to CTranslate2 with `quantization` into `export/ct2-<quantization>/`
    (atomically), with the tokenizer and preprocessor files faster-whisper reads."""
    from transformers import AutoConfig, AutoProcessor, GenerationConfig

    name = ct2.form_name(quantization)
    if src.adapter is None:
        raise TranscribeError("export needs an adapter (a run id, a run folder or an adapter folder)")
    family = model_family(AutoConfig.from_pretrained(resolve_model(src.model)))
    if family != "whisper":
        raise TranscribeError(f"--to ct2 with {src.model} ({family}): {ct2.MOONSHINE_REFUSAL}")
    ct2.require_ctranslate2()
    merged = merged_folder(src)
    processor, gc = AutoProcessor.from_pretrained(merged), GenerationConfig.from_pretrained(merged)
    previous = prompt_token_ids(processor, src.prompt, AutoConfig.from_pretrained(merged).max_target_positions)[0] if src.prompt else []
    prompt, dst = ct2.whisper_prompt(gc, src.language, src.task, previous), export_dir(src, name)
    with atomic_folder(dst) as tmp:
        ct2.convert(merged, tmp, quantization, processor)
        write_json(tmp / "preprocessing.json", {**preprocessing(src, family), "prompt_tokens": prompt,
                                                "ct2_max_length": ct2.ct2_max_length(src.max_new_tokens, len(prompt))})
        write_json(tmp / "export.json", _export_record(src, name, quantization=quantization, merged_from=str(merged)))
        (tmp / "README.md").write_text(CT2_README.format(
            run=_run_name(src), model=src.model, adapter=src.adapter, quantization=quantization, folder=dst, sr=SAMPLE_RATE,
            rms=src.rms_target, prompt=prompt, ct2_max_length=ct2.ct2_max_length(src.max_new_tokens, len(prompt)), max_new_tokens=src.max_new_tokens,
            fw_max_new_tokens=ct2.ct2_max_length(src.max_new_tokens, len(prompt)) - len(prompt),
            language=src.language, task=src.task, initial_prompt=f"\n                               initial_prompt={src.prompt!r}," if src.prompt else ""))
    return dst


FORM_ORDER = ["merged", *(ct2.form_name(q) for q in ct2.QUANTIZATIONS)]


def exported_forms(src: Source) -> tuple[dict[str, Path], dict[str, str]]:
    """Every form in `export/` made from this adapter ({name: folder}, in FORM_ORDER), and the ones
    left out with the reason (made from another adapter: a different adapter_sha256 in export.json)."""
    forms, stale = {}, {}
    for name in FORM_ORDER:
        folder = export_dir(src, name)
        if not folder.exists():
            continue
        if is_current(folder, src):
            forms[name] = folder
        else:
            stale[name] = f"{folder / 'export.json'}: adapter_sha256 is not this adapter's (export it again)"
    return forms, stale


def export(source: str | Path, to: str = "merged", quantization: str = "int8", model: str | None = None,
           runs_dir: str | Path | None = None, parity: bool = True, sample: int = 200, device: str = "cpu",
           causes: bool = False, faster_whisper: bool = True) -> dict:
    """`lorakit export`: write the form, then (by default) the parity report of every form of this
    adapter in `export/` against the unmerged adapter, with faster-whisper's rows unless `faster_whisper`
    is False. `causes`: also measure why faster-whisper differs
    from the kit (`parity.faster_whisper_causes`, on `sample` clips per set). Returns {"form", "path", "parity", "causes"}."""
    if to not in FORMS:
        raise TranscribeError(f"--to {to}: not available; lorakit exports {', '.join(FORMS)}")
    src = resolve_source(model, source, runs_dir)
    path = export_merged(src) if to == "merged" else export_ct2(src, quantization)
    out: dict = {"form": path.name, "path": str(path), "parity": None}
    if parity:
        forms, stale = exported_forms(src)
        out["parity"] = parity_report(src, forms, sample=sample, device=device, left_out=stale, faster_whisper=faster_whisper)
    if causes:
        out["causes"] = faster_whisper_causes(src, exported_forms(src)[0], sample=sample)
    return out


def describe(result: dict) -> str:
    lines = [f"exported {result['form']}: {result['path']}"]
    if result.get("parity"):
        lines.append(json.dumps(result["parity"]["acceptance"], indent=2))
    return "\n".join(lines)
