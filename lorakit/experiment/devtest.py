"""Dev and test from one evaluation manifest: a run given a domain (or heldout) manifest without a test
manifest of its own chooses its checkpoint on one part (dev) and reports on the other (test), so no
reported number rests on the clips that chose it (`test_split`, the test part's share; 0: off).

The split is a function of the manifest alone, never of the seed or the run: clips are grouped so that
clips sharing a speaker (where the manifest names speakers), identical audio bytes or the same
normalized sentence stay on one side (the leakage check between dev and test then finds nothing by
construction), the groups are ordered by a SHA-256 of their key, and groups are taken in that order
into test while that brings test closer to the fraction (at least one group each side). A manifest
with a single speaker is split by clip instead, and says so. And the one overlap check between a dev
set and its test set (`dev_test_leakage`: audio bytes and normalized text, `leakage.check_leakage`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..config import ConfigError
from ..scoring import normalize_for_leakage
from .audio import AudioError, audio_sha256
from .leakage import LeakageReport, check_leakage
from .manifests import Utterance

SPLIT_RULE = ("clips sharing a speaker_id, audio bytes or normalized text form a group; groups ordered by "
              "sha256('lorakit-test-split:' + key); taken into test in that order while that brings test "
              "closer to test_split of the clips; at least one group on each side")


@dataclass
class DevTest:
    """One eval manifest's two parts, and what the run record says about the split."""

    dev: list[Utterance]
    test: list[Utterance]
    record: dict = field(default_factory=dict)
    warning: str | None = None


def ids_sha256(utts: list[Utterance]) -> str:
    """A short fingerprint of which clips a part holds (their ids in manifest order), for the record."""
    return hashlib.sha256("\n".join(u.id for u in utts).encode()).hexdigest()[:16]


def _audio_key(u: Utterance) -> str:
    try:
        return "audio:" + audio_sha256(u.audio_filepath)
    except AudioError:  # unreadable: the audio check that follows reports it (error, or a counted skip)
        return "path:" + str(u.audio_filepath)


def _groups(utts: list[Utterance], by_speaker: bool) -> list[list[int]]:
    """Indices of `utts` grouped by any shared key (union-find over speaker, audio bytes, text), each
    group ordered by the SHA-256 of its smallest key: a speaker's when it has one, else its audio's."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    keys = []
    for u in utts:
        text = normalize_for_leakage(u.text)
        own = ([f"speaker:{u.speaker_id}"] if by_speaker and u.speaker_id not in (None, "") else []) + [_audio_key(u)]
        own += [f"text:{text}"] if text else []
        for k in own[1:]:
            parent[find(k)] = find(own[0])
        keys.append(own[0])
    members: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(find(k), []).append(i)
    order = {root: min(hashlib.sha256(f"lorakit-test-split:{keys[i]}".encode()).hexdigest() for i in idx)
             for root, idx in members.items()}
    return [members[root] for root in sorted(members, key=order.get)]


def _take(groups: list[list[int]], target: float) -> set[int]:
    """The groups (by position) that go to test: in order, each one that brings test closer to `target`
    clips; the first always, the last never when every other is taken (dev keeps a group)."""
    taken: list[int] = []
    n = 0
    for g, idx in enumerate(groups):
        if not taken or abs(n + len(idx) - target) < abs(n - target):
            taken.append(g)
            n += len(idx)
    if len(taken) == len(groups):
        taken.pop()
    return set(taken)


def split_dev_test(utts: list[Utterance], fraction: float, name: str, path: str) -> DevTest:
    """`utts` (one eval manifest, in manifest order) split into dev and test at `fraction` of the clips
    for test, speaker-disjoint where every clip names a speaker; each part in manifest order."""
    by_speaker = bool(utts) and all(u.speaker_id not in (None, "") for u in utts)
    groups = _groups(utts, by_speaker)
    warning = None
    if by_speaker and len(groups) < 2:
        by_speaker, groups = False, _groups(utts, False)
        warning = (f"{name}: {path} has one speaker, so its dev/test split (test_split {fraction:g}) is by clip, "
                   "not speaker-disjoint: test measures new sentences of that voice, not new voices")
    if len(groups) < 2:
        raise ConfigError(f"{path}: cannot split the {name} set into dev and test (test_split {fraction:g}): its "
                          f"{len(utts)} clip(s) share one speaker, audio or sentence; give {name}_test_manifest, or test_split 0")
    taken = _take(groups, fraction * len(utts))
    test_idx = {i for g in taken for i in groups[g]}
    dev = [u for i, u in enumerate(utts) if i not in test_idx]
    test = [u for i, u in enumerate(utts) if i in test_idx]
    record = {"manifest": path, "fraction": fraction, "by": "speaker" if by_speaker else "clip", "rule": SPLIT_RULE,
              "dev": len(dev), "test": len(test), "dev_groups": len(groups) - len(taken), "test_groups": len(taken),
              "dev_ids_sha256": ids_sha256(dev), "test_ids_sha256": ids_sha256(test)}
    return DevTest(dev, test, record, warning)


def dev_test_leakage(dev: dict[str, list[Utterance]], tests: dict[str, list[Utterance]]) -> dict[str, LeakageReport]:
    """For each test set with a dev set (`domain_test` and `domain`...), the test clips whose audio bytes
    or normalized text also occur in that dev set: the choice would leak into the report."""
    return {name: check_leakage(dev[name.removesuffix("_test")], {name: test})
            for name, test in tests.items() if name.removesuffix("_test") in dev}
