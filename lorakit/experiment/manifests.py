"""JSONL manifests (NeMo keys): reading with file:line errors, and the duration filter with its
starvation guard. The train/eval leakage check is in `leakage.py`.

One line per utterance::

    {"audio_filepath": "clips/a.wav", "text": "hello there", "duration": 1.7, "speaker_id": "s1", "language": "en"}

`audio_filepath` and `text` are required; `duration`, `speaker_id` and `language` are optional; other
keys are kept in the file but ignored. Relative paths resolve against the manifest's folder, so a
data folder can move as a whole.

`language` is the clip's spoken language as a Whisper code (the way multilingual fine-tuning data
carries one per row). A row without it is in its manifest's declared language: the run's `language`,
or `replay_language` for the replay set (`with_language` fills it in; `prepare` does so for every set).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import soundfile as sf

from ..config import ConfigError, RunConfig


PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------
# Reading


MAX_REPORTED_BAD_LINES = 20  # one ManifestError lists this many bad lines, then counts the rest


def location(path: str, line: int, unit: Literal["line", "row"]) -> str:
    """How errors name a place in the data: `manifest:line`, or `dataset row N`."""
    return f"{path}:{line}" if unit == "line" else f"{path} row {line}"


class ManifestError(ValueError):
    """A bad manifest line: `path:line: field 'text': empty text` (for a Hugging Face dataset, a bad
    row: `data/my_ds row 3: field 'sentence': empty text`; `unit` is "row" and `line` the row index).

    When a manifest has several bad lines, one error reports them all (`others`: the lines after the
    first, each its own ManifestError), so a user fixes the file in one pass. `path`, `line`, `field`
    and `reason` are the first bad line's; the message lists up to MAX_REPORTED_BAD_LINES lines, one
    per row, then "... and N more".
    """

    def __init__(self, path: PathLike, line: int | None, field: str | None, reason: str,
                 others: tuple["ManifestError", ...] = (), unit: Literal["line", "row"] = "line"):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        self.others, self.unit = tuple(others), unit
        super().__init__(self._message())

    @property
    def where(self) -> str:
        return self.path if self.line is None else location(self.path, self.line, self.unit)

    @property
    def problem(self) -> str:
        """The message without the `path:line:` prefix (what skip mode records)."""
        return f"field '{self.field}': {self.reason}" if self.field else self.reason

    @property
    def errors(self) -> list["ManifestError"]:
        """Every bad line this error reports, the first one included."""
        return [ManifestError(self.path, self.line, self.field, self.reason, unit=self.unit), *self.others]

    def _message(self) -> str:
        first = f"{self.where}: {self.problem}"
        if not self.others:
            return first
        shown = self.errors[:MAX_REPORTED_BAD_LINES]
        what = "line(s) of this manifest" if self.unit == "line" else "row(s) of this dataset"
        lines = [first + f" (and {len(self.others)} more bad {what})"]
        lines += [f"{e.where}: {e.problem}" for e in shown[1:]]
        if len(self.errors) > len(shown):
            lines.append(f"... and {len(self.errors) - len(shown)} more bad {self.unit}(s)")
        return "\n".join(lines)

    def __reduce__(self):  # picklable despite the 4-argument constructor
        return type(self), (self.path, self.line, self.field, self.reason, self.others, self.unit)


@dataclass(frozen=True)
class Utterance:
    id: str  # "<manifest stem>:<line>" ("<dataset name>:<row>"): stable as long as the data is unchanged
    audio_filepath: str  # absolute
    text: str  # stripped of leading/trailing whitespace
    duration: float  # seconds
    speaker_id: str | None
    line: int  # 1-based line of a JSONL manifest; a dataset's row index (0-based, as `ds[i]` takes it)
    manifest: str  # the manifest's absolute path, or the dataset (its folder, or `hf:<id>[:<split>]`)
    unit: Literal["line", "row"] = "line"  # "row": the utterance comes from a Hugging Face dataset
    language: str | None = None  # spoken language (a Whisper code); None: the row names none, its manifest's declared one applies

    @property
    def where(self) -> str:
        """`manifest:line`, or `dataset row N`: how error messages name the utterance."""
        return location(self.manifest, self.line, self.unit)


@dataclass(frozen=True)
class Manifest:
    path: str
    sha256: str  # of the file bytes (a dataset: of its fingerprint and columns): the run record pins which data was used
    utterances: list[Utterance]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    n_lines: int = 0  # non-blank lines read (a dataset's rows)
    unit: Literal["line", "row"] = "line"  # "row": read from a Hugging Face dataset (`hf_datasets.py`)

    def __len__(self) -> int:
        return len(self.utterances)

    def summary(self) -> str:
        u = self.unit
        s = f"{self.path}: {len(self.utterances)} of {self.n_lines} {u}s usable"
        if self.skipped:
            line, reason = self.skipped[0]
            s += f"; skipped {len(self.skipped)} bad {u}s (first: {u} {line}: {reason})"
        return s


def read_manifest(path: PathLike, on_bad: Literal["error", "skip"] = "error") -> Manifest:
    """Read and validate a JSONL manifest.

    on_bad="error" reads the whole file, then raises one ManifestError naming every bad line (the
    first one's path, line and field as its attributes); "skip" leaves bad lines out but records
    each one in `Manifest.skipped` and warns, so nothing disappears silently. Blank lines are
    ignored. A manifest without a usable line raises ManifestError either way.
    """
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    mpath = Path(os.path.abspath(path))
    if not mpath.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    data = mpath.read_bytes()

    utterances: list[Utterance] = []
    bad: list[ManifestError] = []
    seen: dict[tuple[str, str], int] = {}  # (audio, text) -> first line, to catch duplicates
    n_lines = 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if lineno == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # UTF-8 BOM that some editors write
        if not raw.strip():
            continue
        n_lines += 1
        try:
            utt = _parse_line(raw, lineno, mpath)
            first = seen.setdefault((utt.audio_filepath, utt.text), lineno)
            if first != lineno:
                raise ManifestError(mpath, lineno, "audio_filepath", f"duplicate of line {first}")
        except ManifestError as e:
            bad.append(e)
            continue
        utterances.append(utt)

    return finish_manifest(str(mpath), hashlib.sha256(data).hexdigest(), utterances, bad, n_lines, on_bad)


def finish_manifest(path: str, sha256: str, utterances: list[Utterance], bad: list[ManifestError], n_lines: int,
                    on_bad: Literal["error", "skip"], unit: Literal["line", "row"] = "line") -> Manifest:
    """The Manifest, or one ManifestError naming every bad line (row); skipped ones are recorded and warned
    about. Shared by JSONL manifests and Hugging Face datasets, so both treat bad input the same way."""
    if bad and on_bad == "error":
        raise ManifestError(bad[0].path, bad[0].line, bad[0].field, bad[0].reason, tuple(bad[1:]), unit=unit)
    skipped = [(e.line, e.problem) for e in bad]
    if not utterances:
        reason = f"no usable {unit}s" + (f" ({len(skipped)} bad {unit}s skipped)" if skipped else "")
        raise ManifestError(path, None, None, reason, unit=unit)
    manifest = Manifest(path, sha256, utterances, skipped, n_lines, unit)
    if skipped:
        warnings.warn(manifest.summary(), stacklevel=3)
    return manifest


def _parse_line(raw: bytes, lineno: int, mpath: Path) -> Utterance:
    def bad(field: str | None, reason: str) -> ManifestError:
        return ManifestError(mpath, lineno, field, reason)

    try:
        text_line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(None, f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})")
    try:
        obj = json.loads(text_line)
    except json.JSONDecodeError as e:
        raise bad(None, f"malformed JSON: {e.msg} at column {e.colno}")
    except (ValueError, RecursionError) as e:  # e.g. a 5000-digit integer, absurd nesting
        raise bad(None, f"malformed JSON: {type(e).__name__}: {e}")
    if not isinstance(obj, dict):
        raise bad(None, f"not a JSON object (got {_json_type(obj)})")

    for key in ("audio_filepath", "text"):
        if key not in obj:
            raise bad(key, "missing")
        if not isinstance(obj[key], str):
            raise bad(key, f"expected a string, got {_json_type(obj[key])}")
    text = obj["text"].strip()
    if not text:
        raise bad("text", "empty text")
    if not _encodable(text):  # JSON allows "\ud800"; tokenizers and UTF-8 writers do not
        raise bad("text", "invalid Unicode (lone surrogate escape)")
    if not obj["audio_filepath"].strip():
        raise bad("audio_filepath", "empty path")

    duration = listed_duration(obj.get("duration"), bad)

    speaker = obj.get("speaker_id")
    if speaker is not None:
        if isinstance(speaker, bool) or not isinstance(speaker, str | int):
            raise bad("speaker_id", f"expected a string or integer, got {_json_type(speaker)}")
        speaker = str(speaker)

    language = obj.get("language")
    if language is not None:
        language = language_code(language, bad)

    audio = os.path.abspath(mpath.parent / obj["audio_filepath"])
    if duration is None:
        duration = file_duration(audio, bad)
    else:
        file_duration(audio, bad, read=False)

    return Utterance(
        id=f"{mpath.stem}:{lineno}",
        audio_filepath=audio,
        text=text,
        duration=float(duration),
        speaker_id=speaker,
        line=lineno,
        manifest=str(mpath),
        language=language,
    )


def language_code(value: Any, bad, field: str = "language") -> str:
    """A row's `language`: a Whisper code in lower case (en, fr, de, haw...); whether the model knows it is
    checked once the model is loaded (`prepare`)."""
    if not isinstance(value, str):
        raise bad(field, f"expected a language code (a string), got {_json_type(value)}")
    if not (value.isascii() and value.isalpha() and value.islower()):
        raise bad(field, f"{value!r} is not a language code in lower case, as Whisper writes it (en, fr, de, haw...)")
    return value


def with_language(manifest: Manifest, language: str) -> Manifest:
    """`manifest` with `language` on every utterance whose row names none (its declared language)."""
    utts = [u if u.language else dataclasses.replace(u, language=language) for u in manifest.utterances]
    return dataclasses.replace(manifest, utterances=utts)


def declare_languages(cfg: RunConfig, manifests: dict[str, Manifest]) -> dict[str, Manifest]:
    """Every clip's spoken language: its row's own, else its set's declared one (`replay_language` for the
    replay set, the run's `language` for every other). Replay clips in another language than the run's are
    refused in one line naming the choices (`cross_language_replay` "refuse"), kept under their own language
    token ("own_token"), or relabelled with the run's ("run_token": what lorakit did before issue 31, which
    teaches the run's token to answer in the replay's language; kept to measure it)."""
    out = {name: with_language(m, cfg.replay_language if name == "replay" else cfg.language) for name, m in manifests.items()}
    replay = out.get("replay")
    other = Counter(u.language for u in replay.utterances if u.language != cfg.language) if replay else Counter()
    if not other:
        return out
    if cfg.cross_language_replay == "refuse":
        langs = ", ".join(f"{n} in {lang}" for lang, n in other.most_common())
        first = other.most_common(1)[0][0]
        raise ConfigError(
            f"parameter 'replay_manifest' = {cfg.replay_manifest!r}: {langs} of its {len(replay)} clips (replay_language, "
            f"or their rows' language), but the run's language is {cfg.language!r}; trained under <|{cfg.language}|> they "
            f"would teach the model to answer {cfg.language} speech in {first}. Choose: -p replay_manifest \"\" (no replay), "
            f"a replay set in {cfg.language} (-p replay_manifest <file> -p replay_language {cfg.language}), or "
            f"-p cross_language_replay own_token (each clip under its own language token, <|{first}|>)")
    if cfg.cross_language_replay == "run_token":
        out["replay"] = dataclasses.replace(replay, utterances=[dataclasses.replace(u, language=cfg.language)
                                                                for u in replay.utterances])
    return out


def training_languages(train: list[Utterance], replay: list[Utterance], n_replay: int, batch_size: int) -> dict:
    """What the record names: each set's languages with their clip counts and shares, and each language's
    share of every training batch (the train part, batch_size - n_replay clips, and the replay part)."""
    batch: Counter = Counter()
    for utts, part in ((train, (batch_size - n_replay) / batch_size), (replay, n_replay / batch_size)):
        for lang, v in language_shares(utts).items():
            batch[lang] += part * v["share"]
    return {"train": language_shares(train), "replay": language_shares(replay),
            "batches": {lang: round(share, 4) for lang, share in batch.most_common()}}


def language_shares(utts: list[Utterance]) -> dict[str, dict[str, float]]:
    """{language: {"clips": n, "share": n / total}}, most clips first (ties by code): what the record names."""
    counts = Counter(u.language for u in utts)
    total = max(1, len(utts))
    return {lang: {"clips": n, "share": round(n / total, 4)}
            for lang, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))}


def listed_duration(duration: Any, bad) -> float | None:
    """A listed `duration` (None when absent or null: "unknown, read it from the file")."""
    if duration is None:
        return None
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise bad("duration", f"expected a number, got {_json_type(duration)}")
    try:
        duration = float(duration)  # an integer too large for a float overflows here
    except OverflowError:
        duration = math.inf
    if not math.isfinite(duration):
        raise bad("duration", f"must be finite, got {duration}")
    if duration <= 0:
        raise bad("duration", f"must be > 0, got {duration}")
    return duration


def file_duration(audio: str, bad, read: bool = True, field: str = "audio_filepath") -> float | None:
    """Check that `audio` is a file; with `read`, its duration from the header. Errors name `field`."""
    try:
        is_file = os.path.isfile(audio)
    except (OSError, ValueError):  # embedded NUL byte, over-long name: no such file either way
        is_file = False
    if not is_file:
        raise bad(field, f"audio file not found: {audio}")
    if not read:
        return None
    try:
        duration = sf.info(audio).duration
    except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise bad(field, f"unreadable audio ({e})")
    if not duration > 0:
        raise bad(field, "zero-length audio")
    return duration


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


# ---------------------------------------------------------------------------------------------
# Duration filter


class StarvationError(ValueError):
    """The duration filter left too little data to train on."""

    def __init__(self, message: str, *, kept: int, total: int, max_seconds: float, what: str):
        super().__init__(message)
        self.kept, self.total, self.max_seconds, self.what = kept, total, max_seconds, what


@dataclass(frozen=True)
class DurationFilter:
    kept: list[Utterance]
    dropped: list[Utterance]
    max_seconds: float
    what: str = "train"

    def summary(self) -> str:
        n, k = len(self.kept) + len(self.dropped), len(self.kept)
        pct = 100.0 * k / n if n else 0.0
        s = f"kept {k} of {n} {self.what} clips ({pct:.1f} %) ≤ {self.max_seconds:g} s"
        s += f"; dropped {len(self.dropped)}"
        if self.dropped:
            s += f" (longest {max(u.duration for u in self.dropped):.1f} s)"
        return s

    def to_dict(self) -> dict[str, Any]:
        return {"max_seconds": self.max_seconds, "kept": len(self.kept),
                "dropped": len(self.dropped)}


def filter_by_duration(
    utts: list[Utterance],
    max_seconds: float = 20.0,
    min_keep: int = 32,
    min_keep_fraction: float = 0.5,
    what: str = "train",
) -> DurationFilter:
    """Keep clips of at most `max_seconds`, refusing to starve the data.

    Raises StarvationError when the filter drops clips and leaves fewer than `min_keep` of them
    or less than `min_keep_fraction` of the set (or leaves none at all). A past run lost almost
    all its training data to max_seconds=8 without anyone noticing; this makes that loud. A set
    that is small to begin with and loses nothing passes: the guard is about the filter.
    """
    ok = isinstance(max_seconds, numbers.Real) and not isinstance(max_seconds, bool)
    if not (ok and math.isfinite(max_seconds) and max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number, got {max_seconds!r}")
    kept = [u for u in utts if u.duration <= max_seconds]
    dropped = [u for u in utts if u.duration > max_seconds]
    total = len(utts)
    fraction = len(kept) / total if total else 0.0
    too_few = len(kept) < min_keep or fraction < min_keep_fraction
    if not kept or (dropped and too_few):
        hint = f"; median clip {statistics.median(u.duration for u in utts):.1f} s" if utts else ""
        raise StarvationError(
            f"max_seconds={max_seconds:g} keeps only {len(kept)} of {total} {what} clips "
            f"({100 * fraction:.1f} %{hint}); refusing to train on a starved set. "
            f"Raise max_seconds or lower min_keep_fraction (now {min_keep_fraction:g}) "
            f"/ min_keep (now {min_keep}).",
            kept=len(kept), total=total, max_seconds=max_seconds, what=what,
        )
    return DurationFilter(kept, dropped, float(max_seconds), what)
