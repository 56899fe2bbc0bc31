"""Every environment variable lorakit reads, read here and nowhere else, so that what a notebook shows
is what runs: the project root, the cache root, the smoke profile, ranks and GPUs under a launcher, and
the environments handed to kernels, child processes and remote workers. Imports nothing from lorakit.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# LORAKIT_PROGRESS: "text": bars as text lines (`lorakit run` streams the kernel's output to its terminal);
# "notebook": bars in the notebook only (`lorakit run --quiet`); unset: bars in the notebook, and a run in a
# notebook kernel also writes its progress lines to the terminal the kernel was started from (plain papermill)
PROGRESS_ENV = "LORAKIT_PROGRESS"


def project_root() -> Path:
    """The folder holding `params/default.yaml`: $LORAKIT_ROOT, else the nearest one above the cwd.

    Papermill runs notebooks from the caller's folder, nbmake and JupyterLab from the notebook's,
    so relative paths in parameters resolve here rather than against whatever the cwd is.
    """
    env = os.environ.get("LORAKIT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params" / "default.yaml").exists():
            return candidate
    return here


def project_path(path: str | os.PathLike) -> Path:
    """`path` if absolute, else relative to the project root: the one rule every path a user gives the kit
    follows, so it means the same under papermill (cwd: repo), nbmake/JupyterLab (cwd: notebooks/) and the CLI."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def cache_root() -> Path:
    """Converted models, encoder outputs and baselines: $LORAKIT_CACHE, else `.cache/lorakit` in the repo."""
    env = os.environ.get("LORAKIT_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / ".cache" / "lorakit"


def smoke_requested() -> bool:
    """LORAKIT_SMOKE=1: notebooks build their config in the smoke profile (`RunConfig.smoke`)."""
    return os.environ.get("LORAKIT_SMOKE") == "1"


def progress_as_text() -> bool:
    """LORAKIT_PROGRESS=text: this process's output streams to a terminal, so bars are text lines."""
    return os.environ.get(PROGRESS_ENV) == "text"


def progress_to_terminal() -> bool:
    """LORAKIT_PROGRESS unset (plain papermill, JupyterLab, nbmake): a run in a kernel also writes its progress
    lines to the kernel's terminal; "text" or "notebook" (set by `lorakit run`): it does not."""
    return os.environ.get(PROGRESS_ENV, "") == ""


def launch_world_size() -> int:
    """Processes of this run under `accelerate launch` / torchrun (1 when started plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch_rank() -> int:
    """This process's rank under `accelerate launch` / torchrun (0 when started plainly)."""
    return int(os.environ.get("RANK", "0"))


def visible_gpus_listed() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list, None when unset (then every GPU torch sees is visible)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return None if listed is None else [g.strip() for g in listed.split(",") if g.strip()]


@contextmanager
def kernel_environment(**changes: str) -> Iterator[None]:
    """Variables a kernel started inside the block inherits (a kernel takes this process's environment);
    restored afterwards."""
    before = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def child_environment(**changes: str) -> dict[str, str]:
    """The environment for a child process (a run, a worker): this one's, with `changes` on top."""
    return {**os.environ, **changes}


def lorakit_environment() -> dict[str, str]:
    """The LORAKIT_* variables, handed on to workers on other machines (Ray tasks)."""
    return {k: v for k, v in os.environ.items() if k.startswith("LORAKIT_")}
