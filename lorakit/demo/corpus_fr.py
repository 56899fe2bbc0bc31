"""The French domain-only scenario: French clinical dictation and everyday French, by espeak-ng's French voices.

`build_corpus_fr` (`lorakit demo-data --language fr`) writes, beside their audio, into data/demo_fr/:

- `train_domain_only.jsonl` clinical dictation by the train voices, and nothing else (the situation of a
                  user who has recordings of their domain only);
- `domain_dev.jsonl`, `domain.jsonl` clinical dictation (dev chooses, test reports: 520 clips, the
                  protocol's size), with drug names and procedures that train never says and a voice that
                  train never hears;
- `heldout_dev.jsonl`, `heldout.jsonl` everyday French (test: 320 clips) by voices heard nowhere else;
- `replay_unlabeled.jsonl` everyday French with no transcript (audio_filepath, duration, speaker_id), and
                  its audio folder `audio/replay/`: the same-language unlabeled pool a user may have, for
                  `replay_manifest` (the frozen base model pseudo-labels it: `experiment/pseudo_labels.py`);
- `replay.jsonl`  the same clips with their true text: the oracle a study compares pseudo-labels against.

espeak-ng has French voices for France, Belgium and Switzerland (fr, fr-be, fr-ch); the mbrola voices it
lists need mbrola, which is absent, and flite speaks English only. Speakers are variants of those three
(+f2, +m3, +klatt...) heard through the English corpus's channels (clean, telephone, light noise); the
rendering, the seeded plan and the build check are `corpus.py`'s.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from . import corpus as C
from . import words_fr as W
from .corpus import PlannedClip, Voice
from .options import DEMO_SIZES, demo_data_arguments, demo_data_settings

LANGUAGE = "fr"  # the Whisper language code of every clip
CORPUS_VERSION = 1  # bump when the file layout changes; content changes are caught by the plan hash
SPLITS = ("train_domain_only", "domain", "heldout", "replay", "domain_dev", "heldout_dev")
TRAINING_SPLITS = ("train_domain_only", "replay")  # what a run may train on: domain-only terms and voices stay out
CLIP_PREFIX = {"train_domain_only": "t", "domain_dev": "dd", "heldout_dev": "hd"}
UNLABELED = "replay_unlabeled"  # the replay clips' manifest without transcripts

TRAIN_VOICES = {
    Voice("espeak", "fr"): 2, Voice("espeak", "fr+f2"): 2, Voice("espeak", "fr-be+m3"): 1,
    Voice("espeak", "fr+m7", "noise"): 1, Voice("espeak", "fr-be", "phone"): 1, Voice("espeak", "fr+f4", "phone"): 1,
}
DOMAIN_ONLY_VOICES = {Voice("espeak", "fr+klatt"): 1}
DOMAIN_VOICES = {**TRAIN_VOICES, **DOMAIN_ONLY_VOICES}
REPLAY_VOICES = {Voice("espeak", "fr"): 1, Voice("espeak", "fr+f2"): 1, Voice("espeak", "fr-be+m3"): 1}
HELDOUT_VOICES = {Voice("espeak", "fr-ch+m2"): 1, Voice("espeak", "fr-ch+f3"): 1}  # heard nowhere else
DEFAULT_SIZES = DEMO_SIZES["fr"]  # clips per split (options.py holds them: `lorakit --help` must not import this module)


def _number(slot: str, rng: random.Random) -> str | None:
    """Fillers that are numbers or built from numbers, with a decimal comma; None when `slot` is a word-list slot."""
    if slot == "ebl":  # blood loss in steps of 50 millilitres
        return str(50 * rng.randint(*W.NUMBER_RANGES[slot]))
    return C.number_filler(slot, rng, W, decimal_mark=",", lab_link="à")


def elide(text: str) -> str:
    """French elision that a slot can make necessary: 'de amoxicilline' -> "d'amoxicilline", 'de hémoglobine' ->
    "d'hémoglobine" (every h in the lists is mute); digits never elide."""
    return re.sub(r"\b([dD]e|[qQ]ue) (?=[aeiouyhéèêàâîôœAEIOUYHÉÈÊÎÔ])", lambda m: m.group(1)[:-1] + "'", text)


def make_sentence(template: str, rng: random.Random, lists: dict[str, list[str]]) -> str:
    """Fill a template's `{slot}` fields; repeated slots (`{drug}`, `{drug2}`) get distinct fillers."""
    text = elide(C.fill_template(template, rng, lists, _number))
    return text[0].upper() + text[1:]


def plan_corpus_fr(seed: int, sizes: dict[str, int]) -> tuple[list[PlannedClip], list[str]]:
    """Decide every utterance (text, voice, prosody, path) from the seed; return them and the domain-only terms.
    Each split draws from its own stream, as in the English corpus (`corpus.draw_clips`)."""
    domain_only, train_lists, all_lists = C.term_lists(seed, W)
    groups = [  # (split, kind, count, templates, word lists, voices)
        ("train_domain_only", "clinical", sizes["train_domain_only"], W.CLINICAL_TEMPLATES, train_lists, TRAIN_VOICES),
        ("domain", "clinical", sizes["domain"], W.CLINICAL_TEMPLATES, all_lists, DOMAIN_VOICES),
        ("heldout", "everyday", sizes["heldout"], W.GENERAL_TEMPLATES, all_lists, HELDOUT_VOICES),
        ("replay", "everyday", sizes["replay"], W.GENERAL_TEMPLATES, train_lists, REPLAY_VOICES),
        ("domain_dev", "clinical", sizes["domain_dev"], W.CLINICAL_TEMPLATES, all_lists, DOMAIN_VOICES),
        ("heldout_dev", "everyday", sizes["heldout_dev"], W.GENERAL_TEMPLATES, all_lists, HELDOUT_VOICES),
    ]
    return C.with_paths(C.draw_clips(seed, groups, SPLITS, make_sentence), CLIP_PREFIX), domain_only


def build_corpus_fr(out_dir: Path = Path("data/demo_fr"), seed: int = 0, sizes: dict[str, int] | None = None,
                    jobs: int = 2, force: bool = False) -> dict[str, Path]:
    """Synthesize the French scenario into `out_dir`; return the manifest paths by name (the splits and
    `replay_unlabeled`). Skips the work when `out_dir/corpus.json` records the same plan and every file is
    present, unless `force`. `jobs`: parallel synthesis processes."""
    out_dir, sizes = Path(out_dir), {**DEFAULT_SIZES, **(sizes or {})}
    manifests = {name: out_dir / f"{name}.jsonl" for name in (*SPLITS, UNLABELED)}
    start = time.perf_counter()
    utterances, domain_only = plan_corpus_fr(seed, sizes)
    identity = {"version": CORPUS_VERSION, "language": LANGUAGE, "seed": seed, "sizes": sizes,
                "plan_sha256": C.plan_sha256(utterances)}
    if not force and C.is_complete(out_dir, identity) and manifests[UNLABELED].is_file():
        return manifests
    C.check_binaries()
    C.check_splits(utterances, domain_only, SPLITS, TRAINING_SPLITS, DOMAIN_ONLY_VOICES)
    durations = C.render_all(utterances, out_dir, jobs, "French demo corpus: synthesize")
    C.write_manifests(manifests, utterances, durations, _manifest_rows)
    (out_dir / "terms.txt").write_text("\n".join(W.DRUGS + W.PROCEDURES + W.CONDITIONS) + "\n")
    voices = {s: sorted({u.voice.speaker_id for u in utterances if u.split == s}) for s in sizes}
    summary = {**identity, "hours": C.split_hours(utterances, durations, sizes), "voices": voices, "domain_only_terms": domain_only,
               "domain_only_voices": sorted(v.speaker_id for v in DOMAIN_ONLY_VOICES),
               "build_seconds": round(time.perf_counter() - start, 1), "jobs": jobs,
               "tools": {b: C.tool_version(b) for b in ("espeak-ng", "sox")}}
    (out_dir / "corpus.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return manifests


def _manifest_rows(u: PlannedClip, duration: float) -> Iterator[tuple[str, dict]]:
    """A clip's row in its split, with its `language`; a replay clip's once more without text (`replay_unlabeled`)."""
    row = {**C.manifest_row(u, duration), "language": LANGUAGE}
    yield u.split, row
    if u.split == "replay":
        yield UNLABELED, {k: v for k, v in row.items() if k != "text"}


def main(argv: list[str] | None = None) -> int:
    """`python -m lorakit.demo.corpus_fr`: build the French scenario (`lorakit demo-data --language fr`)."""
    parser = argparse.ArgumentParser(prog="lorakit demo-data --language fr", description=__doc__.splitlines()[0])
    demo_data_arguments(parser, language="fr")
    return build(parser.parse_args(argv))


def build(args: argparse.Namespace) -> int:
    """`lorakit demo-data --language fr`: build from parsed options (`options.demo_data_arguments`), print the manifests."""
    out, sizes = demo_data_settings(args)
    started = time.time()
    manifests = build_corpus_fr(out, args.seed, sizes, jobs=args.jobs, force=args.force)
    summary, state = C.build_state(out, started)
    print(f"French demo corpus in {out} ({state}):")
    for name, path in manifests.items():
        split = "replay" if name == UNLABELED else name
        print(f"  {path}: {summary['sizes'][split]} utterances, {summary['hours'][split]} h"
              + (" (no transcripts)" if name == UNLABELED else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
