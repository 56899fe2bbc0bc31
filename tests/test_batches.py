"""Which clips form a training batch: seeded, resumable, and with replay the requested share of general speech."""

from __future__ import annotations

from itertools import islice

import pytest

from lorakit import RunConfig
from lorakit.config import ConfigError
from lorakit.experiment.batches import mixed_batches, train_batches
from lorakit.experiment.manifests import Utterance


def _utts(stem: str, n: int) -> list[Utterance]:
    return [Utterance(f"{stem}:{i}", f"/{stem}/{i}.wav", f"{stem} {i}", 1.0 + (i * 7 % 13) / 4, None, i, stem) for i in range(1, n + 1)]


TRAIN, REPLAY = _utts("train", 50), _utts("replay", 23)


def _ids(batches, n: int) -> list[list[str]]:
    return [[u.id for u in b] for b in islice(batches, n)]


def test_train_batches_resume_exactly():
    straight = _ids(train_batches(TRAIN, 8, seed=3), 20)  # 6 batches an epoch: crosses three epochs
    assert _ids(train_batches(TRAIN, 8, seed=3, start=7), 13) == straight[7:]
    assert straight != _ids(train_batches(TRAIN, 8, seed=4), 20)


@pytest.mark.parametrize("batch_size, n_replay", [(8, 2), (8, 4), (5, 1)])
def test_replay_batches_hold_the_requested_share(batch_size, n_replay):
    for batch in islice(mixed_batches(TRAIN, REPLAY, batch_size, n_replay, seed=0), 30):
        stems = [u.manifest for u in batch]
        assert len(batch) == batch_size and stems.count("replay") == n_replay
        assert len({u.id for u in batch}) == batch_size  # no clip twice in a batch


def test_replay_batches_are_seeded_and_cover_the_replay_set():
    a = _ids(mixed_batches(TRAIN, REPLAY, 8, 2, seed=0), 40)
    assert a == _ids(mixed_batches(TRAIN, REPLAY, 8, 2, seed=0), 40)
    assert a != _ids(mixed_batches(TRAIN, REPLAY, 8, 2, seed=1), 40)
    replayed = [i for b in a[:11] for i in b if i.startswith("replay")]  # 11 batches of 2: one replay epoch (23 // 2)
    assert len(set(replayed)) == 22
    # the training part is the plain stream of batch_size - n_replay clips: replay does not reorder it
    assert [b[:6] for b in a] == _ids(train_batches(TRAIN, 6, seed=0), 40)


@pytest.mark.parametrize("start", [1, 8, 25])
def test_replay_batches_resume_exactly(start):
    straight = _ids(mixed_batches(TRAIN, REPLAY, 8, 3, seed=5), 40)
    assert _ids(mixed_batches(TRAIN, REPLAY, 8, 3, seed=5, start=start), 40 - start) == straight[start:]


def test_no_replay_is_the_plain_stream():
    assert _ids(mixed_batches(TRAIN, [], 8, 0, seed=2, start=3), 10) == _ids(train_batches(TRAIN, 8, seed=2, start=3), 10)


@pytest.mark.parametrize("ratio, batch_size, per_batch", [(0.25, 8, 2), (0.3, 8, 2), (0.5, 5, 3), (0.1, 8, 1), (0.0, 8, 0)])
def test_replay_ratio_gives_clips_per_batch(ratio, batch_size, per_batch):
    cfg = RunConfig(replay_manifest="data/demo/replay.jsonl", replay_ratio=ratio, batch_size=batch_size)
    assert cfg.replay_per_batch() == per_batch


@pytest.mark.parametrize("values", [{"replay_ratio": 1.0, "replay_manifest": "r.jsonl"},
                                    {"replay_ratio": 0.05, "replay_manifest": "r.jsonl"},
                                    {"replay_ratio": 0.95, "replay_manifest": "r.jsonl"}])
def test_bad_replay_ratios_are_named(values):
    with pytest.raises(ConfigError, match="'replay_ratio'"):
        RunConfig.from_dict(values)


def test_an_empty_replay_manifest_alone_turns_replay_off():
    """`-p replay_manifest ""` is how a user says "no replay" (as an empty heldout_manifest skips heldout)."""
    assert RunConfig.from_dict({"replay_ratio": 0.25, "replay_manifest": ""}).replay_per_batch() == 0
