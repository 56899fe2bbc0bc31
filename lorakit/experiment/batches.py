"""Which utterances form a batch: seeded, resumable training batches, length-sorted evaluation
batches, and seeded subsets. Pure functions of their arguments (no model, no audio)."""

from __future__ import annotations

import random
from typing import Iterator

from .manifests import Utterance


def train_batches(utts: list[Utterance], batch_size: int, seed: int | str, start: int = 0) -> Iterator[list[Utterance]]:
    """Endless micro-batches: a fresh seeded shuffle each epoch; within an epoch, batches of similar
    length (shuffled in chunks of 50 batches) so padding stays small.

    The i-th batch is a pure function of (utts, batch_size, seed, i), so a resumed run sees exactly
    the batches the uninterrupted run would have seen: pass `start` = micro-batches already consumed.
    """
    per_epoch = max(1, len(utts) // batch_size)  # drop the ragged tail: every batch is full
    epoch, offset = divmod(start, per_epoch)
    while True:
        batches = _epoch_batches(utts, batch_size, seed, epoch)
        for batch in batches[offset:]:
            yield batch
        epoch, offset = epoch + 1, 0


def _epoch_batches(utts: list[Utterance], batch_size: int, seed: int | str, epoch: int) -> list[list[Utterance]]:
    rng = random.Random(f"{seed}:{epoch}")
    order = list(utts)
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for i in range(0, len(order) - batch_size + 1, chunk):
        block = sorted(order[i : i + chunk], key=lambda u: u.duration)
        batches += [block[j : j + batch_size] for j in range(0, len(block) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


def mixed_batches(utts: list[Utterance], replay: list[Utterance], batch_size: int, n_replay: int, seed: int,
                  start: int = 0) -> Iterator[list[Utterance]]:
    """Endless micro-batches of `batch_size` clips: `batch_size - n_replay` from `utts` and `n_replay`
    from `replay` (general speech against forgetting), each part a `train_batches` stream of its own
    (the replay one seeded apart), so batch i is still a pure function of (utts, replay, batch_size,
    n_replay, seed, i) and `start` resumes exactly. With n_replay = 0 it is `train_batches` itself.
    """
    if n_replay == 0:
        yield from train_batches(utts, batch_size, seed, start)
        return
    own = train_batches(utts, batch_size - n_replay, seed, start)
    general = train_batches(replay, n_replay, f"replay:{seed}", start)
    for mine, theirs in zip(own, general):
        yield mine + theirs


def eval_batches(utts: list[Utterance], batch_size: int) -> list[list[Utterance]]:
    """Length-sorted batches (longest first, so a memory problem shows up at once)."""
    order = sorted(utts, key=lambda u: -u.duration)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def subset(utts: list[Utterance], n: int, seed: int) -> list[Utterance]:
    """A seeded subset of n utterances (all of them when n is 0 or larger than the set)."""
    if n <= 0 or n >= len(utts):
        return list(utts)
    rng = random.Random(f"subset:{seed}")
    picked = rng.sample(range(len(utts)), n)
    return [utts[i] for i in sorted(picked)]
