"""faster-whisper as users call it: `WhisperModel.transcribe` on a CTranslate2 export, fed the kit's
normalized samples (`audio.load_audio`: mono, 16 kHz, RMS to the run's target), compared with the kit's
own hypotheses (the unmerged adapter) on the parity sample. Each row: hypotheses identical to the
kit's, WER with S/D/I, utterances per CPU-second.

Rows (`SETTINGS`):
- `readme`: the export README's call, the closest faster-whisper gets to the kit (see below);
- `defaults`: faster-whisper's own defaults with the run's language (beam 5, temperature fallback
  0.0..1.0, timestamps on, condition_on_previous_text, no-speech skip at 0.6); `defaults+vad` adds
  vad_filter=True.

Why faster-whisper differs from the kit, read in faster-whisper 1.2 and measured by `causes` (one
setting swapped at a time, from the call the issue tried, `readme-v1`):
- front end: faster-whisper computes log-mels of the clip alone and pads them to 30 s with zeros in
  log-mel space (`pad_or_trim` on the features); transformers (the kit, and training) pads the *audio*
  with zeros, so the padding reads as silence (the max - 8 floor). A short clip is mostly padding, so
  this moves hypotheses; padding the samples to 30 s before `transcribe` removes it (`PAD_TO_S`);
- no-speech skip: with `no_speech_threshold=0.6` and `log_prob_threshold=-1.0` a window whose
  no-speech probability is high and whose mean log-probability is low is dropped whole (deletions);
  the kit never skips: `no_speech_threshold=None`;
- length limit: CTranslate2 generates at most `max_length // 2` tokens, and faster-whisper passes
  `max_length = len(prompt) + max_new_tokens` (448 by default): the kit's N new tokens need
  `max_new_tokens = ct2_max_length(N, len(prompt)) - len(prompt)`;
- suppressed tokens: faster-whisper's `suppress_tokens=[-1]` list (its non-speech symbols plus the
  task and start tokens) equals the generation config's `suppress_tokens` for the bundled Whispers, but
  not for a model whose config suppresses more (the tests' tiny Whisper suppresses every special token:
  with faster-whisper's list it writes nothing); the README passes the model's own list.

Measured (bundled whisper-tiny.en, no adapter, CT2 float32, 30 seeded clips of data/demo/domain_dev and
30 of heldout_dev, 1 thread, 2026-12-07; identical hypotheses to the kit, WER against the kit's 37.53 / 7.74 %):
readme-v1 10/30 and 26/30 (36.22 / 8.05 %); + pad 30 s 29/30 and 30/30; + kit features 29/30 and 30/30
(the same: the log-mel arithmetic is not a cause); + no_speech off or + max_new_tokens alone: no change;
readme (all three) 30/30 and 30/30. faster-whisper's defaults: 8/30 and 23/30 (31.76 / 4.95 %: beam 5 is
better than greedy here, a decoding choice, not a deployment error).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..experiment.audio import SAMPLE_RATE, load_audio
from ..experiment.evaluate import score
from ..experiment.manifests import Utterance
from ..files import read_json
from ..scoring import normalize
from .transcribe import Source

PAD_TO_S = 30.0  # seconds: a clip shorter than one Whisper window is zero-padded to it before transcribe


def export_settings(folder: Path) -> dict:
    """A CTranslate2 export's preprocessing.json with its generation config's `suppress_tokens` added."""
    gc = folder / "generation_config.json"
    return {**read_json(folder / "preprocessing.json"), **({"suppress_tokens": read_json(gc).get("suppress_tokens")} if gc.exists() else {})}


def readme_settings(pre: dict) -> dict[str, Any]:
    """The `WhisperModel.transcribe` keyword arguments of the export README, from `export_settings`: greedy, one temperature, no timestamps, no previous text, no VAD,
    no no-speech skip, the kit's limit and suppressed tokens."""
    max_new = int(pre["ct2_max_length"]) - len(pre["prompt_tokens"])  # CT2 halves max_length: see the module docstring
    out: dict[str, Any] = {"language": pre.get("language", "en"), "task": pre.get("task", "transcribe"), "beam_size": 1, "temperature": 0.0,
                           "without_timestamps": True, "condition_on_previous_text": False, "vad_filter": False,
                           "no_speech_threshold": None, "max_new_tokens": max_new}
    if pre.get("suppress_tokens") is not None:
        out["suppress_tokens"] = list(pre["suppress_tokens"])
    if pre.get("prompt"):
        out["initial_prompt"] = pre["prompt"]
    return out


def defaults_settings(pre: dict, vad: bool = False) -> dict[str, Any]:
    """faster-whisper's defaults, told the run's language and task (and its text prompt, as a user would)."""
    out: dict[str, Any] = {"language": pre.get("language", "en"), "task": pre.get("task", "transcribe"), "vad_filter": vad}
    if pre.get("prompt"):
        out["initial_prompt"] = pre["prompt"]
    return out


def issue_settings(pre: dict) -> dict[str, Any]:
    """The README's call before issue 27 (`readme-v1`): greedy, one temperature, no timestamps, no previous
    text, no VAD; faster-whisper's no-speech skip and length limit left at their defaults."""
    out = readme_settings(pre)
    for key in ("no_speech_threshold", "max_new_tokens", "suppress_tokens"):
        out.pop(key, None)
    return out


@dataclass
class Variant:
    """One way of calling faster-whisper: transcribe's keyword arguments and the front end it is fed."""

    name: str
    kwargs: dict[str, Any]
    pad: bool = True  # samples zero-padded to PAD_TO_S before transcribe
    kit_features: bool = False  # faster-whisper's log-mels replaced by the kit's (transformers) features
    what: str = ""


def user_variants(pre: dict) -> list[Variant]:
    """The rows every parity report shows for a CTranslate2 form."""
    return [Variant("readme", readme_settings(pre), what="the export README's call"),
            Variant("defaults", defaults_settings(pre), pad=False, what="faster-whisper's defaults (beam 5, timestamps, fallback)"),
            Variant("defaults+vad", defaults_settings(pre, vad=True), pad=False, what="defaults with vad_filter=True")]


def cause_variants(pre: dict) -> list[Variant]:
    """From the issue's call (readme-v1), one thing swapped at a time; then the README's call with the kit's
    own features (what is left is the log-mel arithmetic); then faster-whisper's defaults, one undone at a time."""
    v1, readme, n = issue_settings(pre), readme_settings(pre), readme_settings(pre)["max_new_tokens"]
    d = defaults_settings(pre)
    return [Variant("readme-v1", v1, pad=False, what="the README's call the issue measured"),
            Variant("v1 + pad 30 s", v1, what="front end: audio zero-padded to 30 s (silence, not zero log-mels)"),
            Variant("v1 + kit features", v1, kit_features=True, what="front end: the kit's transformers features"),
            Variant("v1 + no_speech off", {**v1, "no_speech_threshold": None}, pad=False, what="no-speech skip off"),
            Variant("v1 + max_new_tokens", {**v1, "max_new_tokens": n}, pad=False, what=f"the kit's token limit (max_new_tokens={n})"),
            Variant("v1 + suppress_tokens", {**v1, "suppress_tokens": readme.get("suppress_tokens", [-1])}, pad=False,
                    what="the model's own suppressed tokens"),
            Variant("readme", readme, what="all of the above but the features (= the README)"),
            Variant("readme + kit features", readme, kit_features=True, what="the README's call on the kit's features"),
            Variant("defaults", d, pad=False, what="faster-whisper's defaults"),
            Variant("defaults + pad 30 s", d, what="defaults, audio padded to 30 s"),
            Variant("defaults + beam 1", {**d, "beam_size": 1}, pad=False, what="defaults with greedy search"),
            Variant("defaults + temperature 0", {**d, "temperature": 0.0}, pad=False, what="defaults without fallback"),
            Variant("defaults + no timestamps", {**d, "without_timestamps": True}, pad=False, what="defaults without timestamps"),
            Variant("defaults + no_speech off", {**d, "no_speech_threshold": None}, pad=False, what="defaults without the no-speech skip")]


def pad_to_window(x: np.ndarray, seconds: float = PAD_TO_S, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Zero samples appended up to one window (a longer clip is returned as it is)."""
    size = int(seconds * sampling_rate)
    return np.pad(x, (0, size - len(x))) if len(x) < size else x


class KitFrontEnd:
    """faster-whisper's feature extractor replaced by the kit's transformers WhisperFeatureExtractor (a
    measurement hook: which share of the difference is the log-mel arithmetic). One extra frame is
    appended because faster-whisper drops the last one (`content_frames = frames - 1`)."""

    def __init__(self, original, processor_fe):
        self.original, self.fe = original, processor_fe

    def __getattr__(self, name: str):
        return getattr(self.original, name)

    def __call__(self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None) -> np.ndarray:
        f = self.fe(waveform, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
        return np.concatenate([f, f[:, -1:]], axis=1)


def load_faster_whisper(folder: Path, threads: int):
    """`faster_whisper.WhisperModel` on an export folder, on `threads` CPU threads (compute type as exported)."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(folder), device="cpu", compute_type="default", cpu_threads=int(threads))


def fw_decode(model, audio: list[np.ndarray], variant: Variant, processor_fe=None) -> list[str]:
    """faster-whisper's hypotheses for normalized clips, one `transcribe` call each, segments joined."""
    original = model.feature_extractor
    if variant.kit_features:
        model.feature_extractor = KitFrontEnd(original, processor_fe)
    try:
        out = []
        for x in audio:
            segments, _ = model.transcribe(pad_to_window(x) if variant.pad else x, **variant.kwargs)
            out.append(" ".join(s.text.strip() for s in segments).strip())
        return out
    finally:
        model.feature_extractor = original


def variant_row(model, variant: Variant, sets: dict[str, list[Utterance]], audio: dict[str, list[np.ndarray]],
                reference: dict[str, list[str]], language: str, processor_fe=None) -> dict:
    """One row per set: identical hypotheses (exact text, and after the scorer's normalizer), WER/S/D/I, speed."""
    row: dict[str, Any] = {"variant": variant.name, "what": variant.what, "pad_to_30s": variant.pad, "kit_features": variant.kit_features,
                           "settings": variant.kwargs, "sets": {}}
    for name, utts in sets.items():
        cpu, wall = time.process_time(), time.perf_counter()
        hyps = fw_decode(model, audio[name], variant, processor_fe)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        summary = score(utts, hyps, language).summary()
        same = sum(a == b for a, b in zip(hyps, reference[name]))
        same_norm = sum(normalize(a, language) == normalize(b, language) for a, b in zip(hyps, reference[name]))
        row["sets"][name] = {**summary, "identical": same, "identical_normalized": same_norm,
                             "utt_per_cpu_s": round(len(utts) / max(cpu, 1e-9), 2), "utt_per_s": round(len(utts) / max(wall, 1e-9), 2),
                             "first_diffs": [{"id": u.id, "kit": b, "faster_whisper": a}
                                             for u, a, b in zip(utts, hyps, reference[name]) if a != b][:3]}
    return row


def faster_whisper_rows(src: Source, folder: Path, sets: dict[str, list[Utterance]], reference: dict[str, list[str]],
                        threads: int, variants: list[Variant] | None = None) -> list[dict]:
    """faster-whisper on one CT2 export folder, each variant (default: `user_variants`) over the sample."""
    from transformers import WhisperFeatureExtractor

    pre = export_settings(folder)
    model = load_faster_whisper(folder, threads)
    audio = {name: [load_audio(u.audio_filepath, rms_target=src.rms_target) for u in utts] for name, utts in sets.items()}
    fe = WhisperFeatureExtractor.from_pretrained(str(folder))
    fw_decode(model, audio[next(iter(audio))][:1], Variant("warm", readme_settings(pre)))  # lazy setup, untimed
    return [variant_row(model, v, sets, audio, reference, src.text_language, fe) for v in (variants or user_variants(pre))]


def causes_markdown(rows_by_form: dict[str, list[dict]], title: str) -> str:
    """One table per CTranslate2 form: each variant's identical hypotheses, WER and S/D/I per set."""
    from ..display import markdown_table

    columns = [("variant", "call"), ("set", "set"), ("identical", "identical to the kit"), ("wer", "WER %"), ("sdi", "S/D/I"),
               ("utt_per_cpu_s", "utt/CPU-s"), ("what", "what changed")]
    lines = [f"# {title}", ""]
    for form, rows in rows_by_form.items():
        table = [{"variant": r["variant"], "set": name, "identical": f"{s['identical']}/{s['n']}", "wer": f"{s['wer'] * 100:.2f}",
                  "sdi": f"{s['sub']}/{s['del']}/{s['ins']}", "utt_per_cpu_s": s["utt_per_cpu_s"], "what": r["what"]}
                 for r in rows for name, s in r["sets"].items()]
        lines += [f"## {form}", "", markdown_table(table, columns), ""]
    return "\n".join(lines)
