"""Hugging Face datasets as input: any manifest parameter may name a dataset instead of a JSONL file,
either a folder written by `save_to_disk` (a Dataset, or one split's folder of a DatasetDict) or
`hf:<id>[:<split>]` on the Hub (`hf:<id>:<config>:<split>` for a dataset with configurations).

A dataset becomes the same `Manifest` of `Utterance`s a JSONL file does, so everything downstream is
unchanged: validation errors (naming the dataset, the row index and the column), the duration filter
and its starvation guard, leakage, the baseline cache, predictions. Audio keeps the one preprocessing
path: the audio column is read undecoded (`Audio(decode=False)`; datasets >= 4 would decode with
torchcodec, a second decoder whose resampling differs), and each clip's stored bytes are written once
into the cache as a file that `load_audio` reads like any other; a clip stored as a bare path is used
where it is (relative paths resolve against the folder holding the dataset, as a JSONL manifest's do
against its own folder). Utterance ids are `<dataset name>:<row index>`; the "manifest hash" that
pins the data in the run record and the baseline key is the dataset's fingerprint plus the columns.
A `language_column` (e.g. Common Voice's `locale`) gives each row its spoken language, as a JSONL
manifest's `language` key does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import soundfile as sf

from ..params import HUB_PREFIX, is_hub_spec, is_saved_dataset
from ..env import cache_root, project_root
from ..files import atomic_file
from .manifests import (Manifest, ManifestError, Utterance, file_duration, finish_manifest, language_code, listed_duration,
                        read_manifest)

PathLike = str | os.PathLike
DURATION_COLUMN = "duration"  # read when the dataset has it (seconds), else each clip's header is


def is_dataset_spec(value: PathLike) -> bool:
    """`hf:<id>[:<split>]`, or a folder written by `save_to_disk` (Dataset or DatasetDict)."""
    return is_hub_spec(str(value)) or is_saved_dataset(value)


def read_input(value: PathLike, on_bad: Literal["error", "skip"] = "error", *, audio_column: str = "audio",
               text_column: str = "text", speaker_column: str = "", language_column: str = "") -> Manifest:
    """A manifest parameter's data, JSONL manifest or Hugging Face dataset: every reader of a manifest
    parameter comes through here, so each accepts both. The columns apply to datasets only."""
    if is_dataset_spec(value):
        return read_dataset(str(value), on_bad, audio_column=audio_column, text_column=text_column,
                            speaker_column=speaker_column, language_column=language_column)
    return read_manifest(value, on_bad)


def read_dataset(spec: str, on_bad: Literal["error", "skip"] = "error", *, audio_column: str = "audio",
                 text_column: str = "text", speaker_column: str = "", language_column: str = "") -> Manifest:
    """Read and validate a Hugging Face dataset as a manifest (see the module's docstring).

    Bad rows are handled as bad JSONL lines are: on_bad="error" raises one ManifestError naming every
    bad row (`<dataset> row 3: field 'text': empty text`), "skip" records and warns. A missing column
    is an error naming the columns the dataset has.
    """
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    datasets = _datasets_module(spec)
    where = spec if is_hub_spec(spec) else os.path.abspath(spec)
    ds = _load(datasets, spec, where)
    columns = {"audio": audio_column, "text": text_column, "speaker": speaker_column}
    if language_column:  # only when set: the fingerprint of a dataset read without one stays what it was
        columns["language"] = language_column
    wanted = [c for c in (audio_column, text_column, speaker_column, language_column) if c]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise ManifestError(where, None, missing[0], f"no such column (the dataset has: {', '.join(ds.column_names)}); "
                            "set audio_column / text_column / speaker_column / language_column", unit="row")
    fingerprint = ds._fingerprint  # deterministic: content hash or load recipe, kept by save_to_disk
    reader = _RowReader(where, _name(spec), columns, cache_root() / "hf_audio" / fingerprint,
                        project_root() if is_hub_spec(spec) else Path(where).parent)
    rows = _undecoded(datasets, ds.select_columns(wanted + _duration_column(ds)), where, audio_column)
    utterances: list[Utterance] = []
    bad: list[ManifestError] = []
    for i, row in enumerate(rows):
        try:
            utterances.append(reader.utterance(i, row))
        except ManifestError as e:
            bad.append(e)
    sha = hashlib.sha256(json.dumps({"fingerprint": fingerprint, "columns": columns}, sort_keys=True).encode()).hexdigest()
    return finish_manifest(where, sha, utterances, bad, len(ds), on_bad, unit="row")


def _datasets_module(spec: str):
    try:
        import datasets  # optional: the base install reads JSONL manifests only
    except ImportError:
        raise ManifestError(spec, None, None, "reading a Hugging Face dataset needs the `datasets` package: "
                            "pip install 'lorakit[datasets]'", unit="row") from None
    return datasets


def _load(datasets, spec: str, where: str):
    """The Dataset a spec names; a DatasetDict must come down to one split."""
    try:
        if is_hub_spec(spec):
            parts = spec.removeprefix(HUB_PREFIX).split(":")
            repo, config, split = parts[0], (parts[1] if len(parts) == 3 else None), (parts[-1] if len(parts) > 1 else None)
            loaded = datasets.load_dataset(repo, config, split=split)
        else:
            loaded = datasets.load_from_disk(where)
    except Exception as exc:  # noqa: BLE001 -- any failure to load (network, missing split, bad files) is one clear error
        root = exc
        while root.__cause__ is not None:  # datasets wraps the reason ("please install 'torchcodec'") in generic errors
            root = root.__cause__
        raise ManifestError(where, None, None, f"cannot load the dataset ({type(root).__name__}: {root})", unit="row") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            first = next(iter(loaded), "<split>")
            hint = f"e.g. {spec}:{first}" if is_hub_spec(spec) else f"the split's folder, e.g. {Path(where) / first}"
            raise ManifestError(where, None, None, f"holds the splits {', '.join(loaded)}: name one ({hint})", unit="row")
        loaded = next(iter(loaded.values()))
    return loaded


def _undecoded(datasets, ds, where: str, audio_column: str):
    """The dataset with its audio column as {bytes, path} (no decoding): file paths (strings) become the same."""
    try:
        return ds.cast_column(audio_column, datasets.Audio(decode=False))
    except Exception as exc:  # noqa: BLE001 -- arrow's cast errors come in several types
        raise ManifestError(where, None, audio_column, f"holds {ds.features[audio_column]}, not audio "
                            f"(an Audio column or file paths) ({type(exc).__name__})", unit="row") from exc


def _duration_column(ds) -> list[str]:
    return [DURATION_COLUMN] if DURATION_COLUMN in ds.column_names else []


def _name(spec: str) -> str:
    """The id prefix of a dataset's utterances: the folder's name, or the Hub id's last part and split."""
    if is_hub_spec(spec):
        parts = spec.removeprefix(HUB_PREFIX).split(":")
        return "-".join([parts[0].rsplit("/", 1)[-1], *parts[1:]])
    return Path(os.path.abspath(spec)).name


@dataclass(frozen=True)
class _RowReader:
    where: str  # the dataset, as errors name it
    name: str  # utterance ids are "<name>:<row>"
    columns: dict[str, str]  # audio, text, speaker (empty: none)[, language]
    cache: Path  # where embedded audio bytes become files
    base: Path  # relative audio paths resolve against it

    def utterance(self, i: int, row: dict[str, Any]) -> Utterance:
        def bad(field: str | None, reason: str) -> ManifestError:
            return ManifestError(self.where, i, field, reason, unit="row")

        text_column, speaker_column = self.columns["text"], self.columns["speaker"]
        text = row[text_column]
        if text is None:
            raise bad(text_column, "missing")
        if not isinstance(text, str):
            raise bad(text_column, f"expected a string, got {type(text).__name__}")
        if not text.strip():
            raise bad(text_column, "empty text")
        speaker = row[speaker_column] if speaker_column else None
        if speaker is not None and (isinstance(speaker, bool) or not isinstance(speaker, str | int)):
            raise bad(speaker_column, f"expected a string or integer, got {type(speaker).__name__}")
        language_column = self.columns.get("language")
        language = row[language_column] if language_column else None
        language = None if language is None else language_code(language, bad, language_column)
        audio = self._audio_file(i, row[self.columns["audio"]], bad)
        duration = listed_duration(row.get(DURATION_COLUMN), bad)
        if duration is None:
            duration = file_duration(audio, bad, field=self.columns["audio"])
        return Utterance(id=f"{self.name}:{i}", audio_filepath=audio, text=text.strip(), duration=float(duration),
                         speaker_id=None if speaker is None else str(speaker), line=i, manifest=self.where, unit="row",
                         language=language)

    def _audio_file(self, i: int, value: dict | None, bad) -> str:
        """A file `load_audio` reads: the stored bytes, written once into the cache; else the stored path."""
        field = self.columns["audio"]
        data, path = (value or {}).get("bytes"), (value or {}).get("path")
        if data:
            target = self.cache / f"{i}{_extension(path, data, bad, field)}"
            if not (target.is_file() and target.stat().st_size == len(data)):
                with atomic_file(target) as tmp:  # another run reading the same dataset never sees half a file
                    tmp.write_bytes(data)
            return str(target)
        if not path:
            raise bad(field, "missing (neither audio bytes nor a path)")
        audio = os.path.abspath(self.base / path)
        file_duration(audio, bad, read=False, field=field)
        return audio


def _extension(path: str | None, data: bytes, bad, field: str) -> str:
    """The clip's file extension: the stored name's, else the format soundfile reads in the bytes."""
    suffix = Path(path).suffix.lower() if path else ""
    if suffix:
        return suffix
    try:
        return "." + sf.info(io.BytesIO(data)).format.lower()
    except (RuntimeError, OSError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        raise bad(field, f"unreadable audio bytes ({exc})") from None
