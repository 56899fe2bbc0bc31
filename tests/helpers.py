"""Small helpers the test modules share (test modules never import each other)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def absolute_lines(manifest: Path, n: int | None = None) -> list[dict]:
    """A corpus manifest's lines with absolute audio paths, so they can be copied elsewhere."""
    rows = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()][:n]
    return [{**r, "audio_filepath": str(manifest.parent / r["audio_filepath"])} for r in rows]


def write_manifest(path: Path, rows: list) -> Path:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))
    return path


def cheap(tiny_cfg: dict, **changes) -> dict:
    """The tiny run made cheaper still (shared by the reliability tests): decoder adapters (cached
    encoder), one step unless changed, few eval clips and tokens, no heldout."""
    return {**tiny_cfg, "target_modules": "decoder", "max_steps": 1, "eval_interval": 1, "batch_size": 2,
            "max_eval_utterances": 4, "max_new_tokens": 4, "heldout_manifest": "", **changes}


def project_env(root: Path) -> dict[str, str]:
    """The real run settings (no smoke profile), the scratch project at `root`, CPU only: the environment of
    the `lorakit` subprocesses that the recipe and search tests start."""
    env = {k: v for k, v in os.environ.items() if k != "LORAKIT_SMOKE"}
    env.update(LORAKIT_ROOT=str(root), CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env
