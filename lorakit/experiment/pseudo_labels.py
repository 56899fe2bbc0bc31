"""The frozen base model's pass over training data, before any adapter exists: pseudo-labels for
replay from unlabeled audio, and the label check of training clips.

- Replay from unlabeled audio. A `replay_manifest` without transcripts — a folder of audio files, or a
  JSONL manifest none of whose rows has `text` — is transcribed once by the base model under the run's
  language and task, and each transcript becomes its clip's replay target. A clip the base model is
  unsure of (mean token log-probability under `pseudo_label_min_logprob`, Whisper's own fallback rule at
  -1.0), whose transcript is empty, or that hallucinates (`scoring.hallucination_kinds`: a repetition
  loop, or more words than its audio can hold) is left out, and counted by reason in the record.
- Label check (`label_check` report | skip). Training clips whose label the base model's transcript
  disagrees with wildly (WER over `label_check_wer`), or whose text is far too long or too short for the
  clip (characters per second outside CHARS_PER_SECOND), are listed as likely label errors; `skip`
  drops them (counted), as `on_bad_audio skip` drops unusable audio.

Both passes are cached under <cache_root>/base_transcripts/<key>.jsonl with the shared baseline's key
(`baseline.baseline_key`: weights, clips, preprocessing, generation, compute), so a second run on the
same data decodes nothing. The transcripts are decoded without a text prompt: they are training targets,
and training feeds no prompt.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from ..config import RunConfig
from ..display import progress_bar
from ..env import cache_root
from ..params import is_saved_dataset
from ..files import read_jsonl, write_jsonl
from ..scoring import hallucination_kinds, normalize, utterance_errors
from .baseline import baseline_key
from .batches import eval_batches
from .distributed import broadcast
from .features import Inputs
from .manifests import Manifest, ManifestError, Utterance, file_duration
from .models import SpeechModel

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")  # what a folder of audio is read for
CHARS_PER_SECOND = (3.0, 35.0)  # label characters (no spaces) per second of audio; speech runs at ~10-20
KEY_VERSION = "base-transcripts-2"  # bump when a row's fields (or how they are computed) change
MAX_LISTED = 50  # likely label errors listed in the record (all are counted)


# --- reading unlabeled audio ------------------------------------------------------------------------
def is_unlabeled(spec: str) -> bool:
    """Whether a replay_manifest has no transcripts: a folder of audio files (not a saved dataset), or a
    JSONL manifest in which no row has `text`. A manifest with some texts is read as labeled (and its
    rows without text are errors there)."""
    path = Path(spec)
    if path.is_dir():
        return not is_saved_dataset(path)
    if path.suffix != ".jsonl" or not path.is_file():
        return False
    rows = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    try:
        return bool(rows) and not any("text" in json.loads(line) for line in rows)
    except (ValueError, TypeError):
        return False  # the labeled reader reports the bad line


def read_unlabeled(spec: str) -> Manifest:
    """Clips without text (text ""): every audio file under a folder (sorted, recursive), or every row of a
    JSONL manifest (`audio_filepath` required, `duration`, `speaker_id` and `language` optional)."""
    path = Path(spec)
    digest = hashlib.sha256()
    utts: list[Utterance] = []
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise ManifestError(path, None, None, f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in this replay folder")
        for i, f in enumerate(files, start=1):
            digest.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())  # a re-recorded clip changes the key
            duration = file_duration(str(f), lambda field, reason: ManifestError(f, None, field, reason))
            utts.append(Utterance(f"{path.name}:{i}", os.path.abspath(f), "", duration, None, i, str(path)))
        return Manifest(str(path), digest.hexdigest(), utts, [], len(files))
    raw = path.read_bytes()
    for lineno, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if line.strip():
            utts.append(_unlabeled_row(json.loads(line), lineno, path))
    return Manifest(str(path), hashlib.sha256(raw).hexdigest(), utts, [], len(utts))


def _unlabeled_row(obj: dict, lineno: int, path: Path) -> Utterance:
    def bad(field: str, reason: str) -> ManifestError:
        return ManifestError(path, lineno, field, reason)

    if not isinstance(obj.get("audio_filepath"), str) or not obj["audio_filepath"]:
        raise bad("audio_filepath", "missing or not a string (an unlabeled replay row needs its audio)")
    audio = os.path.abspath(path.parent / obj["audio_filepath"])
    duration = obj.get("duration")
    duration = float(duration) if isinstance(duration, (int, float)) else file_duration(audio, bad)
    speaker = obj.get("speaker_id")
    language = obj.get("language") if isinstance(obj.get("language"), str) else None
    return Utterance(f"{path.stem}:{lineno}", audio, "", duration, None if speaker is None else str(speaker), lineno,
                     str(path), language=language)


# --- the base model's pass ----------------------------------------------------------------------------
@torch.no_grad()
def _mean_logprobs(sm: SpeechModel, model_in: dict, encoder_hidden, ids: torch.Tensor) -> list[float]:
    """Each generated sequence's mean token log-probability (nats) over its text tokens and end-of-text,
    teacher-forced through the model that generated it (the forced language/task tokens are not scored).
    Whisper's `generate` returns the text tokens alone: its decoder prompt goes in front again, and an
    end-of-text after them, so the model's confidence that the transcript ends there counts too."""
    eos = sm.base.config.eos_token_id
    if int(ids[0, 0]) != sm.base.config.decoder_start_token_id:
        prompt = torch.tensor(sm.decoder_prompt, device=ids.device).expand(len(ids), -1)
        ids = torch.cat([prompt, ids, torch.full((len(ids), 1), eos, device=ids.device)], dim=1)
    if sm.family == "whisper":
        from transformers.modeling_outputs import BaseModelOutput

        logits = sm.base(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden), decoder_input_ids=ids[:, :-1]).logits
    else:
        logits = sm.base(**model_in, decoder_input_ids=ids[:, :-1]).logits
    targets = ids[:, 1:]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None])[..., 0]
    is_eos = targets == eos
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # padding after the first end-of-text
    special = torch.isin(targets, torch.tensor(sm.processor.tokenizer.all_special_ids, device=targets.device)) & ~is_eos
    mask = (~after_eos & ~special).float()
    return ((logp * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()


def transcribe_with_confidence(sm: SpeechModel, utts: list[Utterance], inputs: Inputs, cfg: RunConfig, desc: str,
                               autocast) -> list[dict]:
    """{"id", "hyp", "avg_logprob", "seconds"} per clip in the order of `utts`: greedy decoding, no text prompt."""
    prompt, sm.prompt_ids = sm.prompt_ids, None
    sm.model.eval()
    out: dict[str, dict] = {}
    try:
        for batch in progress_bar(eval_batches(utts, cfg.eval_batch_size), desc=desc, leave=False):
            with torch.autocast(inputs.device.type, dtype=autocast, enabled=autocast is not None):
                model_in = {} if inputs.cache_dir is not None else inputs.features(batch)
                hidden = None
                if sm.family == "whisper":
                    hidden = inputs.encoder_hidden(batch) if inputs.cache_dir is not None else sm.encode(model_in)
                ids = sm.generate(model_in, cfg.max_new_tokens, encoder_hidden=hidden)
                scores = _mean_logprobs(sm, model_in, hidden, ids)
            for u, text, lp in zip(batch, sm.decode(ids), scores):
                out[u.id] = {"id": u.id, "hyp": text, "avg_logprob": round(lp, 4), "seconds": u.duration}
    finally:
        sm.prompt_ids = prompt
    return [out[u.id] for u in utts]


def base_transcripts(sm: SpeechModel, inputs: Inputs, name: str, utts: list[Utterance], manifest_sha: str, cfg: RunConfig,
                     autocast, accelerator=None, model_fingerprint: str | None = None) -> tuple[list[dict], dict]:
    """The base model's transcripts of `utts` with their confidence, from the shared cache or decoded once
    (by the main process; the others receive them). Returns (rows, {"cache_key", "cached", "seconds"})."""
    key = baseline_key(sm, manifest_sha, [u.id for u in utts], cfg.rms_target, cfg.max_new_tokens,
                       device_type=inputs.device.type, autocast=autocast, model_fingerprint=model_fingerprint)
    key = hashlib.sha256(f"{KEY_VERSION}/{key}".encode()).hexdigest()[:20]
    path = cache_root() / "base_transcripts" / f"{key}.jsonl"
    started, rows = time.perf_counter(), None
    cached = path.exists()
    if accelerator is None or accelerator.is_main_process:
        rows = read_jsonl(path) if cached else transcribe_with_confidence(sm, utts, inputs, cfg, f"base model: {name}", autocast)
        if not cached:
            write_jsonl(path, rows)
    rows = broadcast(rows, accelerator)
    seconds = round(time.perf_counter() - started, 1)
    print(f"base model transcripts of {name}: {'from the shared cache' if cached else f'decoded in {seconds} s'} ({key})")
    return rows, {"cache_key": key, "cached": cached, "seconds": seconds}


# --- pseudo-labels ------------------------------------------------------------------------------------
def pseudo_label_problem(row: dict, language: str, min_logprob: float) -> str | None:
    """Why a base-model transcript is no replay target ("empty", "unsure", "loop", "runaway"), or None."""
    words = normalize(row["hyp"], language).split()
    if not words:
        return "empty"
    if row["avg_logprob"] < min_logprob:
        return "unsure"
    kinds, _, _ = hallucination_kinds(words, seconds=row["seconds"])
    return kinds[0] if kinds else None


def pseudo_labeled(utts: list[Utterance], rows: list[dict], cfg: RunConfig, language: str) -> tuple[list[Utterance], dict]:
    """The replay clips with their pseudo-labels as text, the left-out ones counted by reason (the record's
    data.replay.pseudo_labels, with a few examples)."""
    kept, left_out = [], []
    for u, row in zip(utts, rows):
        problem = pseudo_label_problem(row, language, cfg.pseudo_label_min_logprob)
        if problem is None:
            kept.append(Utterance(u.id, u.audio_filepath, row["hyp"], u.duration, u.speaker_id, u.line, u.manifest, u.unit,
                                  language=language))  # decoded under the run's language token
        else:
            left_out.append({"id": u.id, "reason": problem, "hyp": row["hyp"][:200], "avg_logprob": row["avg_logprob"]})
    reasons = {r: sum(x["reason"] == r for x in left_out) for r in ("empty", "unsure", "loop", "runaway")}
    report = {"clips": len(utts), "kept": len(kept), "left_out": len(left_out), "left_out_by_reason": reasons,
              "min_logprob": cfg.pseudo_label_min_logprob, "examples": left_out[:5]}
    return kept, report


# --- label check --------------------------------------------------------------------------------------
def label_problems(u: Utterance, row: dict, language: str, max_wer: float) -> dict | None:
    """A likely label error ({"wer", "chars_per_second", "reasons"}), or None: the base model's transcript
    has a WER over `max_wer` against the label, or the label has CHARS_PER_SECOND far off for its clip."""
    ref, hyp = normalize(u.text, language), normalize(row["hyp"], language)
    errors = utterance_errors(ref, hyp)
    wer = errors["errors"] / max(1, errors["ref_words"])
    cps = len(ref.replace(" ", "")) / max(u.duration, 1e-3)
    reasons = [f"base-model WER {wer:.2f} > {max_wer:g}"] if wer > max_wer else []
    if not CHARS_PER_SECOND[0] <= cps <= CHARS_PER_SECOND[1]:
        reasons.append(f"{cps:.1f} characters per second (expected {CHARS_PER_SECOND[0]:g}-{CHARS_PER_SECOND[1]:g})")
    return {"wer": round(wer, 4), "chars_per_second": round(cps, 2), "reasons": reasons} if reasons else None


def check_labels(utts: list[Utterance], rows: list[dict], cfg: RunConfig, language: str) -> tuple[list[Utterance], dict]:
    """(training clips to keep, the record's data.train.label_check): every likely label error counted, the
    first MAX_LISTED listed with manifest, line, label and base transcript; `label_check skip` drops them."""
    flagged = []
    for u, row in zip(utts, rows):
        problem = label_problems(u, row, language, cfg.label_check_wer)
        if problem is not None:
            flagged.append({"manifest": u.manifest, "line": u.line, "id": u.id, "audio_filepath": u.audio_filepath,
                            "text": u.text, "base_hyp": row["hyp"], **problem})
    dropped = {f["id"] for f in flagged} if cfg.label_check == "skip" else set()
    report = {"mode": cfg.label_check, "checked": len(utts), "flagged": len(flagged), "dropped": len(dropped),
              "max_wer": cfg.label_check_wer, "chars_per_second": list(CHARS_PER_SECOND),
              "likely_label_errors": sorted(flagged, key=lambda f: -f["wer"])[:MAX_LISTED]}
    return [u for u in utts if u.id not in dropped], report
