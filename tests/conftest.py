"""Session fixtures: a small real corpus (espeak-ng/flite audio) and tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny import tiny_moonshine, tiny_whisper

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped where torch sees no CUDA device (CI, the 2-core machine)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is false (bench/gpu_check.sh runs these)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Encoder and baseline caches go to a per-session folder, except the converted bundled models,
    which are reused from the project cache (converting them again would only cost time). Yields the
    project cache, where `bundled_whisper_base` converts its model."""
    from lorakit.env import cache_root
    from lorakit.experiment import convert_ct2_whisper

    project_cache = cache_root()
    bundled_dir = convert_ct2_whisper.bundled_model_dir()  # convert (or reuse) under the project cache first
    cache = tmp_path_factory.mktemp("lorakit_cache")
    os.environ["LORAKIT_CACHE"] = str(cache)
    (cache / bundled_dir.name).symlink_to(bundled_dir, target_is_directory=True)
    os.environ["LORAKIT_ROOT"] = str(ROOT)
    yield project_cache


@pytest.fixture(scope="session")
def bundled_whisper_base(_isolated_cache) -> Path:
    """bundled:whisper-base, converted once per machine (or reused) under the project cache and linked
    into the session's cache, so every test of the session loads the same folder."""
    from lorakit.env import cache_root
    from lorakit.experiment import convert_ct2_whisper

    path = convert_ct2_whisper.bundled_model_dir("bundled:whisper-base", root=_isolated_cache)
    link = cache_root() / path.name
    if not link.exists():
        link.symlink_to(path, target_is_directory=True)
    return path


@pytest.fixture(scope="session")
def real_speech() -> dict[str, Path]:
    """The real-speech sanity set under data/real (built by `make test`; built here when absent)."""
    from lorakit.demo.real_speech import build_real_speech

    return build_real_speech(ROOT / "data" / "real")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> dict[str, Path]:
    """A small synthesized corpus: real speech from the demo builder, same code path, tiny sizes."""
    from lorakit.demo.corpus import build_corpus

    return build_corpus(tmp_path_factory.mktemp("corpus"), seed=7, n_train=40, n_domain=16, n_heldout=12, n_replay=12,
                        n_domain_dev=8, n_heldout_dev=6, jobs=2)


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory) -> Path:
    return tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))


@pytest.fixture(scope="session")
def moonshine_dir(tmp_path_factory) -> Path:
    return tiny_moonshine(tmp_path_factory.mktemp("tiny_moonshine"))


@pytest.fixture
def tiny_cfg(small_corpus, whisper_dir, tmp_path):
    """RunConfig kwargs for a seconds-long run on the tiny Whisper."""
    return dict(
        model=str(whisper_dir), train_manifest=str(small_corpus["train"]), domain_manifest=str(small_corpus["domain"]),
        heldout_manifest=str(small_corpus["heldout"]), max_steps=4, eval_interval=2, batch_size=4, eval_batch_size=8,
        max_new_tokens=12, min_train_clips=8, lr=1e-3, log_interval=1, output_dir=str(tmp_path / "runs"), warmup_ratio=0.0,
        replay_ratio=0.0, adapter_scales="1.0",  # the default recipe's replay and scales: tested on their own
    )
