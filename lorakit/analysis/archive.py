"""The archive: a run moved out of the matrix with a reason (an `ARCHIVED` file in its folder), and
the archive table (`run_archive.md`), so legacy or broken runs stay documented but out of the way.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Iterable

from ..display import format_wer, markdown_table
from ..files import write_json
from .runs import PathLike, Run


ARCHIVE_COLUMNS = [("run_id", "Run ID"), ("archived", "Archived"), ("reason", "Reason"),
                   ("status", "Status"), ("date", "Run Date"), ("baseline_wer", "Baseline WER"),
                   ("tuned_wer", "Tuned WER"), ("notes", "Notes")]


def archive_run(run_dir: PathLike, reason: str, date: str | None = None) -> Path:
    """Archive a run: it leaves the matrix and is listed in the archive table with `reason`."""
    run_dir = Path(run_dir)
    if not reason or not reason.strip():
        raise ValueError("archiving a run needs a reason")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder {run_dir}")
    path = run_dir / "ARCHIVED"
    write_json(path, {"reason": reason.strip(), "date": date or dt.date.today().isoformat()})
    return path


def unarchive_run(run_dir: PathLike) -> None:
    """Bring an archived run back into the matrix."""
    path = Path(run_dir) / "ARCHIVED"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not archived")
    path.unlink()


def archive_requests(runs_dir: PathLike, archive_run_id: str = "", reason: str = "",
                     unarchive_run_id: str = "") -> str:
    """Apply the notebook's archive parameters (empty = nothing to do); says what it did."""
    done = []
    if archive_run_id:
        archive_run(Path(runs_dir) / archive_run_id, reason)
        done.append(f"archived {archive_run_id}: {reason.strip()}")
    if unarchive_run_id:
        unarchive_run(Path(runs_dir) / unarchive_run_id)
        done.append(f"unarchived {unarchive_run_id}")
    return "; ".join(done) or "No archive changes requested."


def archive_table(runs: Iterable[Run]) -> list[dict]:
    return [{"run_id": r.run_id, "archived": r.archived.get("date"), "reason": r.archived.get("reason"),
             "status": r.status, "date": r.get("date"), "baseline_wer": format_wer(r.metrics.get("baseline_wer")),
             "tuned_wer": format_wer(r.metrics.get("tuned_wer")), "notes": r.get("notes", "")}
            for r in runs if r.archived]


def archive_markdown(runs: Iterable[Run]) -> str:
    rows = archive_table(runs)
    return markdown_table(rows, ARCHIVE_COLUMNS) if rows else "_No archived runs._"


def write_archive(runs: Iterable[Run], runs_dir: PathLike) -> Path | None:
    """`run_archive.md` in `runs_dir` (skipped when the folder does not exist)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return None
    path = runs_dir / "run_archive.md"
    path.write_text(archive_markdown(runs) + "\n")
    return path
