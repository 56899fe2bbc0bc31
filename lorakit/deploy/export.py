"""Export a run's adapter as a form a user ships: `merged` (peft `merge_and_unload` into the base,
saved as a standalone transformers folder with its processor and generation config) under
`executed/<run_id>/export/merged/`, written atomically, with `preprocessing.json` (what the audio
must look like before the feature extractor) and a README.md that shows how to feed it.

CTranslate2 (`ct2`) is not built yet: `export` refuses it with a message saying so.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..record import atomic_folder, now, write_json
from ..experiment.audio import SAMPLE_RATE
from ..experiment.inputs import PREPROCESSING_VERSION
from .transcribe import Source, TranscribeError, load_source, resolve_source

FORMS = ("merged",)

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
ids = model.generate(**features, max_new_tokens={max_new_tokens}, num_beams=1, do_sample=False)
print(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
```

Or through the kit, which does exactly this: `lorakit transcribe --model {folder} clip.wav`. A
Whisper window holds 30 s: for longer clips the kit uses transformers' long-form generation on the
whole normalized clip (`processor(x, truncation=False, padding="longest", return_attention_mask=True)`,
then `generate(..., return_timestamps=True)`).
"""


def export_dir(src: Source, form: str) -> Path:
    """`<run>/export/<form>/`, or `<adapter>/../export/<form>/` for a bare adapter folder."""
    base = src.run_folder if src.run_folder is not None else src.adapter.parent
    return base / "export" / form


def preprocessing(src: Source, family: str) -> dict:
    return {"sampling_rate": SAMPLE_RATE, "channels": "mono (mean of channels)", "rms_target": src.rms_target,
            "resampler": "soxr (default quality)", "preprocessing_version": PREPROCESSING_VERSION, "family": family,
            "language": "en", "task": "transcribe", "timestamps": False, "max_new_tokens": src.max_new_tokens,
            "decoding": "greedy (num_beams=1)", "window_s": 30.0}


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
        write_json(tmp / "export.json", {**src.describe(), "form": "merged", "exported": now()})
        (tmp / "README.md").write_text(README.format(
            run=src.run_folder.name if src.run_folder else src.adapter.name, model=src.model, adapter=src.adapter,
            sr=SAMPLE_RATE, rms=src.rms_target, folder=dst, max_new_tokens=src.max_new_tokens))
    return dst


def export(source: str | Path, to: str = "merged", model: str | None = None, runs_dir: str | Path | None = None,
           parity: bool = True, sample: int = 200, device: str = "cpu") -> dict:
    """`lorakit export`: write the form, then (by default) the parity report of it against the
    unmerged adapter. Returns {"form", "path", "parity"}."""
    if to not in FORMS:
        raise TranscribeError(f"--to {to}: not available; lorakit exports {', '.join(FORMS)} (CTranslate2 is not built yet)")
    src = resolve_source(model, source, runs_dir)
    path = export_merged(src)
    out: dict = {"form": to, "path": str(path), "parity": None}
    if parity:
        from .parity import parity_report

        out["parity"] = parity_report(src, {to: path}, sample=sample, device=device)
    return out


def describe(result: dict) -> str:
    lines = [f"exported {result['form']}: {result['path']}"]
    if result.get("parity"):
        lines.append(json.dumps(result["parity"]["acceptance"], indent=2))
    return "\n".join(lines)
