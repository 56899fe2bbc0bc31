"""How a sweep's runs (and a search's trials) are executed: one after another in this process, `jobs`
at a time as `lorakit run` processes on this machine (cores split between them, one GPU per slot), or
as Ray tasks (one GPU each when the cluster has GPUs). Each run is a papermill execution either way.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

from ..config import ConfigError, RunConfig
from ..env import child_environment, lorakit_environment, project_root, visible_gpus_listed
from ..display import progress_bar
from ..record import run_status
from .notebooks import execute

@dataclass(frozen=True)
class SweepRun:
    run_id: str
    variation: dict[str, Any]  # the values this run changes (validated, typed)
    params: dict[str, Any]  # base + fixed + variation: the notebook's parameters (without run_id)
    command: list[str]  # the `lorakit run ...` that reproduces it


def say(line: str) -> None:
    """A status line on stdout, above any progress bar (tqdm clears its bars, prints, redraws them)."""
    from tqdm.std import tqdm

    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


class Tally:
    """The bar of a sweep's finished runs or a search's finished trials, for launches whose runs write to
    log files or run on Ray: without it the terminal shows only a status line as each run ends."""

    def __init__(self, total: int, desc: str, unit: str = "run", initial: int = 0) -> None:
        self.bar = progress_bar(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

    def reach(self, finished: int) -> None:
        """Set the bar to `finished` (worker threads call this as their runs end; it never goes back)."""
        with self.bar.get_lock():
            self.bar.update(max(0, finished - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def run_sequential(todo: Sequence[SweepRun], force: bool, desc: str = "sweep") -> dict[str, str]:
    """One run after another in this process, each streaming its own output and bars under a header line."""
    statuses = {}
    for k, r in enumerate(todo, 1):
        say(f"{desc}: run {k} of {len(todo)}: {r.run_id}")
        statuses[r.run_id] = execute(r.params, r.run_id, force=force, command=shlex.join(r.command))
    return statuses


def _subprocess_command(run: SweepRun, force: bool) -> list[str]:
    return [sys.executable, "-m", "lorakit", *run.command[1:], "--quiet", *(["--force"] if force else [])]


def thread_env(threads: int) -> dict[str, str]:
    """Environment of one run's process: `threads` CPU threads, so parallel runs do not thrash the cores."""
    n = str(max(1, threads))
    return child_environment(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n)


def _visible_gpus() -> list[str]:
    """The GPUs a job slot may get: CUDA_VISIBLE_DEVICES when set, else every GPU `nvidia-smi -L` lists
    (asked of the driver, not of torch: the launcher does not load torch)."""
    listed = visible_gpus_listed()
    if listed is not None:
        return listed
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in out.splitlines() if line.startswith("GPU "))]


def run_process(run: SweepRun, force: bool, env: dict[str, str], out_dir: Path, logs: Path) -> str:
    """One run as a `lorakit run` process with `env`, its output in <logs>/<id>.log; returns its status."""
    log = logs / f"{run.run_id}.log"
    with open(log, "w") as fh:
        proc = subprocess.run(_subprocess_command(run, force), cwd=project_root(), stdout=fh, stderr=subprocess.STDOUT, env=env)
    status = run_status(out_dir / run.run_id) or "unknown"
    if proc.returncode != 0 and status == "finished":
        status = f"exit {proc.returncode}"
    say(f"{run.run_id}: {status}" + ("" if status == "finished" else f" (log: {log})"))
    return status


class JobSlots:
    """`jobs` slots for `lorakit run` processes on this machine: each gets cores // jobs threads and, with
    GPUs, slot i gets GPU i mod #GPUs (CUDA_VISIBLE_DEVICES); output goes to <logs>/<id>.log."""

    def __init__(self, jobs: int, out_dir: Path, logs: Path) -> None:
        import queue

        self.env, self.out_dir, self.logs = thread_env((os.cpu_count() or 1) // jobs), out_dir, logs
        gpus = _visible_gpus()
        self.slots: queue.Queue = queue.Queue()
        for i in range(jobs):
            self.slots.put(gpus[i % len(gpus)] if gpus else None)
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, run: SweepRun, force: bool = False) -> str:
        """Wait for a free slot, run there, return the run's status."""
        gpu = self.slots.get()
        try:
            return run_process(run, force, {**self.env, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})},
                               self.out_dir, self.logs)
        finally:
            self.slots.put(gpu)


def run_parallel(todo: Sequence[SweepRun], jobs: int, force: bool, out_dir: Path, desc: str = "sweep") -> dict[str, str]:
    """`jobs` runs at a time (see JobSlots), under a bar of finished runs. Logs go to <output_dir>/.sweep-logs/<id>.log."""
    slots, tally, statuses = JobSlots(jobs, out_dir, out_dir / ".sweep-logs"), Tally(len(todo), desc), {}

    def one(run: SweepRun) -> None:
        statuses[run.run_id] = slots.run(run, force)
        tally.reach(len(statuses))

    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, todo))
    finally:
        tally.close()
    return {r.run_id: statuses[r.run_id] for r in todo}


def _ray_task(command: list[str], root: str, env: dict[str, str], folder: str) -> tuple[str, int, str]:
    """One run inside a Ray worker: `lorakit run` as a child process (its own kernel, the GPU Ray gave
    this task via CUDA_VISIBLE_DEVICES); returns (status, exit code, last lines of output)."""
    import subprocess as sp

    from lorakit.env import child_environment
    from lorakit.record import run_status

    proc = sp.run(command, cwd=root, env=child_environment(**env), capture_output=True, text=True)
    return run_status(Path(folder)) or "unknown", proc.returncode, (proc.stdout + proc.stderr)[-2000:]


RAY_TASK_CPUS = 1  # each run's Ray task: one CPU (and one thread: OMP/MKL_NUM_THREADS=1), one GPU when the cluster has GPUs


def _ray(address: str):
    """Ray, connected to `address` ("auto": the running cluster, "local": a fresh instance here, or host:port)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'lorakit[ray]' (or \"ray[default]\")") from None
    if not ray.is_initialized():
        local = {"include_dashboard": False} if address == "local" else {}  # "local": a fresh instance on this machine
        ray.init(address=address, log_to_driver=False, **local)
    return ray


class RaySlots:
    """Runs as Ray tasks, each a `lorakit run` process on some node (the project folder must be at the same
    path on every node: shared storage). `slots` is how many run at once: the cluster's GPUs when it has
    any (a task asks for one), else its CPUs // RAY_TASK_CPUS."""

    def __init__(self, address: str) -> None:
        self.ray = _ray(address)
        resources = self.ray.cluster_resources()
        self.cpus, self.gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        self.slots = self.gpus if self.gpus else max(1, self.cpus // RAY_TASK_CPUS)
        self.task = self.ray.remote(num_cpus=RAY_TASK_CPUS, num_gpus=1 if self.gpus else 0, max_retries=0)(_ray_task)
        self.root = str(project_root())
        self.env = {"LORAKIT_ROOT": self.root, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.env.update(lorakit_environment())

    def describe(self) -> str:
        return f"{1 if self.gpus else 0} GPU each, on {self.cpus} CPUs / {self.gpus} GPUs"

    def submit(self, run: SweepRun, force: bool = False):
        """Start the run's task; returns its Ray object reference."""
        folder = RunConfig.from_dict(run.params).path("output_dir") / run.run_id
        return self.task.remote(_subprocess_command(run, force), self.root, self.env, str(folder))

    def outcome(self, ref, run: SweepRun) -> str:
        """Wait for a submitted run, print and return its status (a lost worker or node is that run's failure)."""
        try:
            status, code, tail = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a lost worker or node is that run's failure, not the launcher's
            status, code, tail = "failed", -1, f"{type(exc).__name__}: {exc}"
        if code != 0 and status == "finished":
            status = f"exit {code}"
        say(f"{run.run_id}: {status}" + ("" if status == "finished" else f"\n{tail}"))
        return status

    def run(self, run: SweepRun, force: bool = False) -> str:
        """One run as a Ray task, waited for (a search's worker thread calls this per trial)."""
        return self.outcome(self.submit(run, force), run)


def run_ray(todo: Sequence[SweepRun], address: str, force: bool, desc: str = "sweep") -> dict[str, str]:
    """Each run a Ray task, all submitted at once (Ray queues them on its slots); statuses as they finish,
    under a bar of finished runs."""
    slots = RaySlots(address)
    refs = {slots.submit(r, force): r for r in todo}
    print(f"ray: {len(refs)} tasks, {slots.describe()}", flush=True)
    statuses, pending, tally = {}, list(refs), Tally(len(todo), desc)
    try:
        while pending:
            done, pending = slots.ray.wait(pending, num_returns=1)
            statuses[refs[done[0]].run_id] = slots.outcome(done[0], refs[done[0]])
            tally.reach(len(statuses))
    finally:
        tally.close()
    return statuses
