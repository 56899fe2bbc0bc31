"""The run record on disk: `executed/<run_id>/` with config.json, history.jsonl, metrics.json and
predictions/. Every whole-file write is atomic (temporary file in the same folder, then rename), so
a killed run never leaves half a JSON file; history is appended line by line and repaired on resume.
See docs/run_record.md for the format.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line (a kill mid-append) is ignored."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    # package metadata, not imports: importing papermill (nbformat, jsonschema) cost ~8 s per run under load
    for name in ("torch", "transformers", "peft", "accelerate", "jiwer", "numpy", "papermill", "lorakit"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # a missing optional package is just not listed
            pass
    return out


def git_sha(root: Path) -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def today() -> str:
    return dt.date.today().isoformat()


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


class RunRecord:
    """One run's folder. Only the main process writes (see `train.run`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.predictions = self.folder / "predictions"

    @property
    def metrics_path(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def history_path(self) -> Path:
        return self.folder / "history.jsonl"

    def metrics(self) -> dict:
        return read_json(self.metrics_path) if self.metrics_path.exists() else {}

    def update_metrics(self, **values: Any) -> dict:
        data = {**self.metrics(), **values}
        write_json(self.metrics_path, data)
        return data

    def history(self) -> list[dict]:
        return read_jsonl(self.history_path) if self.history_path.exists() else []

    def append_history(self, row: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.history_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=_jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_history(self, step: int) -> None:
        """Keep only rows up to `step` (on resume: rows written after the last checkpoint are redone)."""
        rows = [r for r in self.history() if r.get("step", 0) <= step]
        write_jsonl(self.history_path, rows)

    def write_predictions(self, split: str, tag: str, rows: list[dict]) -> Path:
        path = self.predictions / f"{split}_{tag}.jsonl"
        write_jsonl(path, rows)
        return path


def default_command(deltas: dict[str, Any]) -> str:
    """The papermill command that reproduces a run, when the caller did not say how it was started."""
    env = os.environ.get("LORAKIT_COMMAND")
    if env:
        return env
    args = " ".join(f"-p {k} {json.dumps(v) if isinstance(v, str) and (' ' in v or not v) else v}" for k, v in sorted(deltas.items()))
    return f"papermill notebooks/train.ipynb executed/run.ipynb {args}".strip()

