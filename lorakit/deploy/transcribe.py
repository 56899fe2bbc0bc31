"""Transcribe new audio with a model and (optionally) a run's adapter, through the kit's own
preprocessing: `audio.load_audio` with the run's `rms_target`, length-sorted batches
(`batches.eval_batches`), greedy decoding with the adapter active (`SpeechModel.generate`), and WER
with S/D/I from `evaluate.score` when a manifest gives references.

Long audio (longer than one 30 s window) is transcribed whole, never truncated. Whisper uses
transformers' sequential long-form generation (timestamps on, seeking from the last timestamp of each
30 s pass) on the whole normalized clip: plain per-window decoding without timestamps stops at the
first pause of a window (whisper-tiny.en on 51 s of corpus clips, measured: 42 of 100 words deleted,
WER 0.55 in 2 windows; long-form: none deleted, WER 0.33). Moonshine, and a Whisper whose generation
config knows no timestamps, use windows: the normalized clip is cut into windows of at most 30 s,
each cut at the quietest 20 ms frame of the window's last 5 s (so a cut rarely splits a word), each
window RMS-normalized like a training clip, decoded, and the texts joined.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import soundfile as sf
import torch

from ..config import RunConfig
from ..params import is_hub_spec
from ..env import project_root
from ..display import progress_bar as tqdm
from ..files import atomic_write_text, read_json, write_jsonl
from ..record import read_metrics
from ..experiment.audio import RMS_TARGET, load_audio, rms_normalize
from ..experiment.batches import eval_batches
from ..experiment.checkpoint import BEST
from ..experiment.evaluate import score
from ..experiment.hf_datasets import is_dataset_spec, read_input
from ..experiment.manifests import Utterance
from ..experiment.models import SpeechModel, load_model, pick_autocast, pick_device

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")
WINDOW_S = 30.0  # Whisper's fixed input window; Moonshine is cut the same way
CUT_SEARCH_S = 5.0  # the cut goes at the quietest frame of the window's last 5 s
FRAME_S = 0.02


class TranscribeError(ValueError):
    """An input or adapter that cannot be used; the message says which and why."""


@dataclass
class Source:
    """Where the model and its preprocessing come from: a base model, an adapter, a run record."""

    model: str
    adapter: Path | None = None  # a peft folder (adapter_config.json)
    run_folder: Path | None = None  # executed/<run_id>/ when the adapter came from a run
    run_config: dict = field(default_factory=dict)  # the run's config.json "config" section

    @property
    def rms_target(self) -> float:
        return float(self.run_config.get("rms_target", RMS_TARGET))

    @property
    def max_new_tokens(self) -> int:
        return int(self.run_config.get("max_new_tokens", RunConfig.max_new_tokens))

    @property
    def batch_size(self) -> int:
        return int(self.run_config.get("eval_batch_size", 16))

    @property
    def language(self) -> str:
        """The run's spoken language (its multilingual Whisper was prompted with it); en by default."""
        return str(self.run_config.get("language", RunConfig.language))

    @property
    def task(self) -> str:
        return str(self.run_config.get("task", RunConfig.task))

    @property
    def text_language(self) -> str:
        """The language of the text the run's model writes, which WER is normalized for (`SpeechModel.text_language`)."""
        return "en" if self.task == "translate" else self.language

    @cached_property
    def prompt(self) -> str:
        """The text prompt the run decoded with (`prompt`: metrics.json keeps the text as fed, after the cut
        to Whisper's limit, so a terms file edited since does not change it); "" when none."""
        metrics = read_metrics(self.run_folder) if self.run_folder is not None else None
        return str(((metrics or {}).get("prompt") or {}).get("text", ""))

    @property
    def precision(self) -> str:
        return str(self.run_config.get("precision", "auto"))

    def describe(self) -> dict:
        return {"model": self.model, "adapter": None if self.adapter is None else str(self.adapter),
                "run": None if self.run_folder is None else self.run_folder.name, "rms_target": self.rms_target}


def _run_config(run_folder: Path) -> dict:
    path = run_folder / "config.json"
    if not path.exists():
        return {}
    data = read_json(path)
    return data.get("config", data)


def resolve_source(model: str | None = None, adapter: str | Path | None = None, runs_dir: str | Path | None = None) -> Source:
    """`adapter` may be a peft folder, a run folder (its adapter_best/), or a run id under `runs_dir`
    (default <project>/executed). A run's config.json gives the model, rms_target and max_new_tokens;
    an explicit `model` wins over the run's (say, the same base from a local folder)."""
    if adapter is None:
        if not model:
            raise TranscribeError("give a model (a bundled name, a local folder or a hub id), an adapter, or both")
        return Source(model=model)
    p = Path(adapter).expanduser()
    if not p.exists():
        p = Path(runs_dir) / str(adapter) if runs_dir else project_root() / "executed" / str(adapter)
    if (p / "adapter_config.json").exists():
        folder, run_folder = p, (p.parent if (p.parent / "config.json").exists() else None)
    elif (p / BEST / "adapter_config.json").exists():
        folder, run_folder = p / BEST, p
    else:
        raise TranscribeError(f"{adapter}: neither an adapter folder (adapter_config.json) nor a run with {BEST}/ "
                              f"(looked at {p})")
    cfg = _run_config(run_folder) if run_folder else {}
    base = model or cfg.get("model") or read_json(folder / "adapter_config.json").get("base_model_name_or_path")
    if not base:
        raise TranscribeError(f"{folder}: no run config.json and no base model in adapter_config.json: pass model=")
    return Source(model=str(base), adapter=folder, run_folder=run_folder, run_config=cfg)


def load_source(src: Source, device: torch.device | str = "cpu") -> SpeechModel:
    """The model with the adapter injected and active (never merged): how the run evaluated it."""
    sm = load_model(src.model, device=device, language=src.language, task=src.task)
    if src.adapter is not None:
        from peft import PeftModel

        sm.model = PeftModel.from_pretrained(sm.model, str(src.adapter), is_trainable=False)
        sm.model.to(device)
    sm.model.eval()
    sm.set_prompt(src.prompt)
    return sm


# --- inputs -------------------------------------------------------------------------------------

def _file_utterance(path: Path) -> Utterance:
    try:
        duration = float(sf.info(str(path)).duration)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise TranscribeError(f"{path}: unreadable audio ({exc})") from exc
    return Utterance(id=str(path), audio_filepath=str(path.resolve()), text="", duration=duration, speaker_id=None, line=0, manifest="")


def collect_inputs(inputs: Iterable[str | Path] | str | Path) -> list[Utterance]:
    """Audio files, folders (searched recursively for audio extensions), JSONL manifests and Hugging Face
    datasets (save_to_disk folders, hf:<id>[:<split>]; read with the default columns), in order."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    utts: list[Utterance] = []
    for item in items:
        p = Path(item).expanduser()
        spec = str(item) if is_hub_spec(str(item)) else p
        if is_dataset_spec(spec):
            utts += read_input(spec).utterances
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise TranscribeError(f"{p}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            utts += [_file_utterance(f) for f in found]
        elif p.suffix.lower() in (".jsonl", ".json"):
            utts += read_input(p).utterances
        elif p.is_file():
            utts.append(_file_utterance(p))
        else:
            raise TranscribeError(f"{p}: no such file or folder")
    if not utts:
        raise TranscribeError("no inputs given")
    return utts


# --- long audio ---------------------------------------------------------------------------------

def split_windows(x: np.ndarray, sampling_rate: int, window_s: float = WINDOW_S, rms_target: float = RMS_TARGET) -> list[np.ndarray]:
    """Cut a normalized clip into windows of at most `window_s`, each cut at the quietest frame of the
    window's last `CUT_SEARCH_S`; every window is RMS-normalized as a training clip was. A clip that
    fits one window comes back as it is."""
    size = int(window_s * sampling_rate)
    if len(x) <= size:
        return [x]
    frame, search = int(FRAME_S * sampling_rate), int(CUT_SEARCH_S * sampling_rate)
    out, start = [], 0
    while len(x) - start > size:
        lo = start + size - search
        region = x[lo : start + size]
        n = len(region) // frame
        energy = np.square(region[: n * frame].reshape(n, frame).astype(np.float64)).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        out.append(x[start:cut])
        start = cut
    out.append(x[start:])
    return [rms_normalize(w, rms_target) for w in out]


# --- decoding -----------------------------------------------------------------------------------

def _decode(sm: SpeechModel, audio: list[np.ndarray], max_new_tokens: int, device: torch.device, autocast) -> list[str]:
    feats = {k: v.to(device) for k, v in sm.features(audio).items()}
    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        return sm.decode(sm.generate(feats, max_new_tokens))


def long_form_mode(sm: SpeechModel, requested: str = "auto") -> str:
    """"whisper" (transformers' sequential long-form) or "windows" for clips over one window."""
    if requested not in ("auto", "whisper", "windows"):
        raise TranscribeError(f"long_form must be auto, whisper or windows, not {requested!r}")
    gc = getattr(sm.base, "generation_config", None)  # a CTranslate2 model has none: windows
    knows_timestamps = sm.family == "whisper" and getattr(gc, "no_timestamps_token_id", None) is not None
    if requested == "whisper" and not knows_timestamps:
        raise TranscribeError(f"{sm.name}: long-form needs a Whisper whose generation config has timestamp tokens")
    return "whisper" if requested == "auto" and knows_timestamps else ("windows" if requested == "auto" else requested)


def _decode_long_form(sm: SpeechModel, x: np.ndarray, device: torch.device, autocast) -> str:
    """Whisper's sequential long-form decoding of a whole clip (greedy, timestamps on, then dropped)."""
    from ..experiment.models import quiet_transformers

    fe = sm.processor.feature_extractor
    with torch.autocast("cpu", enabled=False):
        f = fe([x], sampling_rate=sm.sampling_rate, return_tensors="pt", truncation=False, padding="longest", return_attention_mask=True)
    with torch.no_grad(), quiet_transformers(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        ids = sm.model.generate(input_features=f.input_features.to(device), attention_mask=f.attention_mask.to(device),
                                return_timestamps=True, num_beams=1, do_sample=False)
    return " ".join(sm.decode(ids))


def _decode_long(sm: SpeechModel, x: np.ndarray, mode: str, max_new_tokens: int, batch_size: int, device, autocast,
                 window_s: float, rms_target: float) -> tuple[str, int]:
    """One long clip: its text and the number of 30 s windows it spans (long-form) or was cut into."""
    if mode == "whisper":
        return _decode_long_form(sm, x, device, autocast), int(np.ceil(len(x) / (WINDOW_S * sm.sampling_rate)))
    parts = split_windows(x, sm.sampling_rate, window_s, rms_target)
    texts = [t for i in range(0, len(parts), batch_size) for t in _decode(sm, parts[i : i + batch_size], max_new_tokens, device, autocast)]
    return " ".join(t for t in texts if t), len(parts)


def input_key(u: Utterance) -> tuple:
    """What identifies one input: its manifest (or dataset) and line (row), and its audio file. Two
    manifests with the same stem, or a file given twice, never share a key by accident of their ids."""
    return (u.manifest, u.unit, u.line, u.audio_filepath)


def input_name(u: Utterance) -> str:
    """How a row names its input: `/abs/manifest.jsonl:line` (`dataset row N`), or the audio file's path."""
    return u.where if u.manifest else u.audio_filepath


def decode_utterances(sm: SpeechModel, utts: list[Utterance], rms_target: float, max_new_tokens: int, batch_size: int = 16,
                      device: torch.device | str = "cpu", autocast: torch.dtype | None = None, window_s: float = WINDOW_S,
                      progress: bool = True, long_form: str = "auto") -> tuple[list[str], list[int]]:
    """Hypotheses in the order of `utts` and the number of 30 s windows each spans. Each distinct input
    (`input_key`) is decoded once; clips that fit one window go in length-sorted batches (as
    `evaluate.transcribe` batches them); a longer clip is decoded whole, one at a time (`long_form`:
    auto, whisper or windows; see the module docstring)."""
    device = torch.device(device)
    sr = sm.sampling_rate
    load = lambda u: load_audio(u.audio_filepath, sampling_rate=sr, rms_target=rms_target)  # noqa: E731
    distinct = list({input_key(u): u for u in utts}.values())
    short = [u for u in distinct if u.duration <= window_s]
    long = [u for u in distinct if u.duration > window_s]
    hyps: dict[tuple, tuple[str, int]] = {}  # input_key -> (text, windows)
    bar = tqdm(total=len(distinct), desc="transcribe", unit="file", disable=not progress)
    for batch in eval_batches(short, batch_size):
        for u, text in zip(batch, _decode(sm, [load(u) for u in batch], max_new_tokens, device, autocast)):
            hyps[input_key(u)] = text, 1
        bar.update(len(batch))
    mode = long_form_mode(sm, long_form) if long else "none"
    for u in long:
        hyps[input_key(u)] = _decode_long(sm, load(u), mode, max_new_tokens, batch_size, device, autocast, window_s, rms_target)
        bar.update(1)
    bar.close()
    return [hyps[input_key(u)][0] for u in utts], [hyps[input_key(u)][1] for u in utts]


@dataclass
class Transcription:
    """One hypothesis per input (with reference and error counts when the manifest has text), the
    corpus WER with S/D/I (None without references), and how fast it went."""

    rows: list[dict]
    summary: dict | None
    source: dict
    seconds: float

    @property
    def utterances_per_s(self) -> float:
        return len(self.rows) / max(self.seconds, 1e-9)


def _rows(utts: list[Utterance], hyps: list[str], windows: list[int], language: str = "en") -> tuple[list[dict], dict | None]:
    with_text = [i for i, u in enumerate(utts) if u.text]
    scored = score([utts[i] for i in with_text], [hyps[i] for i in with_text], language) if with_text else None
    by_index = dict(zip(with_text, scored.rows)) if scored else {}
    rows = []
    for i, (u, hyp) in enumerate(zip(utts, hyps)):
        row: dict[str, Any] = {"input": input_name(u), "id": u.id, "audio_filepath": u.audio_filepath, "hyp": hyp}
        if i in by_index:
            r = by_index[i]
            row.update({k: r[k] for k in ("ref", "ref_norm", "hyp_norm", "ref_words", "sub", "del", "ins")})
        row.update({"duration": round(u.duration, 3), "windows": windows[i]})
        rows.append(row)
    return rows, (scored.summary() if scored else None)


def transcribe(model: str | None = None, adapter: str | Path | None = None, inputs: Iterable[str | Path] | str | Path = (),
               output: str | Path | None = None, fmt: str = "jsonl", batch_size: int | None = None, device: str = "auto",
               precision: str | None = None, runs_dir: str | Path | None = None, window_s: float = WINDOW_S,
               progress: bool = True, long_form: str = "auto") -> Transcription:
    """Transcribe audio files, folders or manifests with `model` (+ `adapter`: a peft folder, run
    folder or run id, whose record gives the model, rms_target and max_new_tokens). Writes `output`
    (jsonl, csv or txt) when given. Batch size and precision default to the run's (eval_batch_size,
    precision: the same batches as its evaluation), else 16 and auto; returns the rows and, when references exist, the corpus WER."""
    src = resolve_source(model, adapter, runs_dir)
    utts = collect_inputs(inputs)
    dev = pick_device(device)
    sm = load_source(src, dev)
    started = time.perf_counter()
    hyps, windows = decode_utterances(sm, utts, src.rms_target, src.max_new_tokens, batch_size or src.batch_size, dev,
                                      pick_autocast(precision or src.precision, dev), window_s, progress, long_form)
    rows, summary = _rows(utts, hyps, windows, sm.text_language)
    result = Transcription(rows, summary, src.describe(), time.perf_counter() - started)
    if output is not None:
        write_output(rows, Path(output), fmt)
    return result


def write_output(rows: list[dict], path: Path, fmt: str = "jsonl") -> None:
    if fmt == "jsonl":
        write_jsonl(path, rows)
    elif fmt == "csv":
        buf = io.StringIO()
        keys = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buf.getvalue())
    elif fmt == "txt":
        atomic_write_text(path, "".join(f"{r['hyp']}\n" for r in rows))
    else:
        raise TranscribeError(f"unknown output format {fmt!r}: jsonl, csv or txt")
