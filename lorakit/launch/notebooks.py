"""The one papermill wrapper: a run is an execution of notebooks/train.ipynb into
<output_dir>/<run_id>/run.ipynb, an analysis an execution of notebooks/analysis.ipynb. Every launcher
(`lorakit run`, sweeps, Ray tasks, the analysis after a sweep) comes through here.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..env import PROGRESS_ENV, kernel_environment, launch_rank, project_root, smoke_requested
from ..config import ConfigError, RunConfig
from ..display import markdown_table
from ..record import check_same_run, read_metrics, run_status


def execute(params: dict[str, Any], run_id: str, force: bool = False, quiet: bool = False, command: str | None = None) -> str:
    """Run the train notebook for one run id; returns the run's final status ('skipped' if finished,
    'refused' if the folder holds a run recorded with another configuration: `force` starts afresh;
    'refused' too, even with `force`, while another process is executing this run id).

    `command` (default: this process's `lorakit ...` command line) reaches the run record as the
    notebook's `command` parameter. Under `accelerate launch` / torchrun every rank executes the
    notebook (its kernel inherits the launcher's environment and joins the process group in
    `train.run`); only rank 0 touches the run folder and writes run.ipynb there, the others write
    their notebook to a scratch folder.
    """
    command = command or shlex.join(["lorakit", *sys.argv[1:]])
    cfg = RunConfig.from_dict({**params, "run_id": run_id, "command": command})
    folder = cfg.path("output_dir") / run_id
    rank = launch_rank()
    if not force:  # before the finished check: a finished run of another recipe is not this one
        try:
            shown = cfg.smoke() if smoke_requested() else cfg  # what the notebook will build (RunConfig.from_namespace)
            check_same_run(shown, folder)
        except ConfigError as exc:  # the old record stays as it is (its run.ipynb too)
            print(f"{run_id}: refused: {exc}", file=sys.stderr)
            return "refused"
    status = run_status(folder)
    if status == "finished" and not force:
        print(f"{run_id}: already finished in {folder} (use --force to run again)")
        return "skipped"
    if rank > 0:  # only rank 0 touches the run folder
        scratch = Path(tempfile.mkdtemp(prefix=f"lorakit-{run_id}-rank{rank}-")) / "run.ipynb"
        return _execute_notebook(params, run_id, command, scratch, folder, quiet=True)
    folder.mkdir(parents=True, exist_ok=True)
    with _sole_writer(folder) as held:
        if not held:
            print(f"{run_id}: refused: another process is running it in {folder} (it holds the folder's lock); "
                  "wait for it, or give this run another run_id", file=sys.stderr)
            return "refused"
        if force:
            _empty(folder)
        elif status in ("running", "failed", "interrupted"):
            print(f"{run_id}: resuming an unfinished run ({status})")
        return _execute_notebook(params, run_id, command, folder / "run.ipynb", folder, quiet)


@contextmanager
def _sole_writer(folder: Path):
    """Yields True while this process holds an exclusive lock on the run folder (flock on the folder
    itself: no lock file to leave behind, released by the kernel when the process dies), False when
    another process holds it. Two executions of one run id would write one history and one checkpoint
    folder, so the second is refused."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        yield held
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _empty(folder: Path) -> None:
    """--force: the folder's old record goes, the folder (and its lock) stays."""
    for entry in folder.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def _execute_notebook(params: dict[str, Any], run_id: str, command: str, output: Path, folder: Path, quiet: bool) -> str:
    """notebooks/train.ipynb into `output`, its output streamed unless `quiet`; the status of the run
    recorded in `folder` (rank 0's run folder, whichever rank asks)."""
    import papermill

    stream = {} if quiet else {"stdout_file": sys.stdout, "stderr_file": sys.stderr}  # the run's own output, as it comes
    try:
        # streamed: its bars as text lines, not widgets; quiet: no progress lines on this terminal either
        with kernel_environment(**{PROGRESS_ENV: "notebook" if quiet else "text"}):
            papermill.execute_notebook(
                str(project_root() / "notebooks" / "train.ipynb"), str(output),
                parameters={**params, "run_id": run_id, "command": command}, cwd=str(project_root()),
                progress_bar=False, **stream,
            )
    except papermill.PapermillExecutionError as exc:
        print(f"{run_id}: failed: {exc.ename}: {exc.evalue} (notebook: {output})", file=sys.stderr)
        return "failed"
    if not quiet:
        print(result_row(folder))
    return run_status(folder) or "unknown"


RESULT_COLUMNS = [("run_id", "run"), ("status", "status"), ("steps", "steps"), ("stop_reason", "stop"), ("best_step", "best step"),
                  ("baseline_wer", "domain base"), ("tuned_wer", "domain tuned"), ("heldout_baseline_wer", "heldout base"),
                  ("heldout_tuned_wer", "heldout tuned"), ("elapsed_s", "s")]


def result_row(folder: Path) -> str:
    """The run's result as a one-row Markdown table (from its metrics.json)."""
    m = read_metrics(folder) or {}
    row = {k: f"{m[k]:.4f}" if k.endswith("wer") and isinstance(m.get(k), float) else m.get(k, "") for k, _ in RESULT_COLUMNS}
    return markdown_table([row], RESULT_COLUMNS)


def execute_analysis(output: Path, parameters: dict[str, Any]) -> bool:
    """notebooks/analysis.ipynb with `parameters` into `output`; False (and a message) when it fails."""
    import papermill

    root = project_root()
    try:
        papermill.execute_notebook(str(root / "notebooks" / "analysis.ipynb"), str(output), parameters=parameters,
                                   cwd=str(root / "notebooks"), progress_bar=False)
    except papermill.PapermillExecutionError as exc:
        print(f"analysis failed: {exc.ename}: {exc.evalue} (notebook: {output})", file=sys.stderr)
        return False
    print(f"analysis: {output}")
    return True
