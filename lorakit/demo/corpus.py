"""The offline demo corpus: clinical dictation by accented and robotic voices, synthesized locally.

`build_corpus` writes NeMo-style manifests beside their audio:

- `train.jsonl`   clinical dictation by the train voices, plus a share of everyday sentences so the
                  model keeps its general English;
- `domain.jsonl`  the primary eval: clinical dictation, including drug names and procedures that never
                  occur in train, by the train voices and at least one voice that train never hears;
- `heldout.jsonl` the safety eval: everyday sentences by flite voices;
- `domain_dev.jsonl`, `heldout_dev.jsonl` smaller sets of the same kinds for choosing checkpoints and
                  adapter scales (`domain_manifest`, `heldout_manifest`), so that `domain.jsonl` (520,
                  the protocol's size) and `heldout.jsonl` (320) are the test sets
                  (`domain_test_manifest`, `heldout_test_manifest`) that report the numbers;
- `replay.jsonl`  general English for `replay_manifest`: everyday sentences by train's everyday voices
                  (never a heldout or domain-only voice), no sentence shared with any other manifest; each
                  row says `"language": "en"`;
- `train_domain_only.jsonl` the clinical lines of train.jsonl only (the situation of a user who has
                  domain speech and nothing else): a filtered copy, no audio of its own.

Speech comes from espeak-ng (accents, robotic variants, speed and pitch) and flite; sox resamples to
16 kHz mono 16-bit and applies the telephone channel (band-limit 300-3400 Hz, 8 kHz round trip, light
compression). Every choice is drawn from `random.Random` streams derived from the seed, in the main
thread, before any audio is rendered, so the same seed gives byte-identical manifests however the
rendering threads interleave. The voice mix was tuned so the bundled Whisper tiny.en has clear
headroom on domain and near-clean heldout (measured numbers: data/README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import re
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..display import progress_bar
from . import words as W
from .options import demo_data_arguments, demo_data_settings

SAMPLE_RATE = 16_000  # Hz, the rate every written clip has
CORPUS_VERSION = 1  # bump when the file layout changes; content changes are caught by the plan hash
GENERAL_SHARE_TRAIN = 0.30  # fraction of train that is everyday speech (guards against forgetting)
DOMAIN_ONLY_DRUG_SHARE = 0.18  # fraction of drug names kept out of train
DOMAIN_ONLY_PROCEDURE_SHARE = 0.15  # fraction of procedures kept out of train
NOISE_SNR_DB = (18.0, 26.0)  # range for the "noise" channel, dB below the speech RMS
PAD_SECONDS = (0.15, 0.30)  # silence before / after speech
BINARIES = ("espeak-ng", "flite", "sox")


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker: TTS engine, its voice name, and the channel it is heard through."""

    engine: str  # "espeak" or "flite"
    name: str  # espeak-ng `-v` value (language+variant) or flite `-voice` value
    channel: str = "clean"  # "clean", "phone" (telephone band, 8 kHz) or "noise" (light white noise)

    @property
    def speaker_id(self) -> str:
        suffix = "" if self.channel == "clean" else f"/{self.channel}"
        return f"{self.engine}:{self.name}{suffix}"


def _v(spec: str) -> Voice:
    """'espeak:en-us+m3/phone' -> Voice('espeak', 'en-us+m3', 'phone')."""
    engine, rest = spec.split(":", 1)
    name, _, channel = rest.partition("/")
    return Voice(engine, name, channel or "clean")


# Voices per role, with relative weights. Domain shares most voices with train (LoRA can learn the
# accents and the channel) and adds DOMAIN_ONLY_VOICES, which train never hears.
TRAIN_CLINICAL_VOICES = {
    _v("espeak:en-us"): 2, _v("espeak:en-us+f2"): 1, _v("espeak:en-gb-x-rp"): 2,
    _v("espeak:en-us+m3/noise"): 1, _v("flite:awb"): 2, _v("flite:awb/phone"): 1,
    _v("flite:kal16"): 1, _v("flite:kal16/phone"): 2,
}
DOMAIN_ONLY_VOICES = {_v("espeak:en-us+klatt"): 2}
DOMAIN_VOICES = {**TRAIN_CLINICAL_VOICES, **DOMAIN_ONLY_VOICES}
TRAIN_GENERAL_VOICES = {
    _v("espeak:en-us"): 1, _v("espeak:en-gb-x-rp"): 1, _v("flite:awb"): 1, _v("flite:kal16"): 1,
}
HELDOUT_VOICES = {_v("flite:slt"): 1, _v("flite:rms"): 1}  # heard nowhere else


@dataclass(frozen=True)
class PlannedClip:
    """One clip to render: what is said, by whom, how fast, and where it is written."""

    split: str
    path: str  # relative to the corpus folder, e.g. "audio/domain/d00012.wav"
    text: str
    voice: Voice
    speed: float  # espeak words per minute, or flite duration stretch
    pitch: int  # espeak pitch 0-99 (unused by flite)
    noise_seed: int
    kind: str = ""  # "clinical" or "everyday"


# ------------------------------------------------------------------------------------------- text
def word_lists(domain_only: set[str], allow_domain_only: bool, words=W) -> dict[str, list[str]]:
    """Word lists by slot name; without `allow_domain_only`, the domain-only terms are left out.
    `words`: the module of word lists (`words` for English, `words_fr` for French)."""
    lists = dict(words.WORD_SLOTS)
    if not allow_domain_only:
        lists["drug"] = [d for d in words.DRUGS if d not in domain_only]
        lists["procedure"] = [p for p in words.PROCEDURES if p not in domain_only]
    return lists



def number_filler(slot: str, rng: random.Random, words=W, decimal_mark: str = ".", lab_link: str = "is") -> str | None:
    """The number fillers both languages build alike: a `words.NUMBER_RANGES` slot, a dose, a lab's name, a
    lab value ('potassium is 4.1', 'potassium à 4,1': `lab_link`, `decimal_mark`), a size in centimeters
    (one decimal); None for any other slot."""
    if slot in words.NUMBER_RANGES:
        return str(rng.randint(*words.NUMBER_RANGES[slot]))
    match slot:
        case "dose":
            return f"{rng.choice(words.DOSE_AMOUNTS)} {rng.choice(words.DOSE_UNITS)}"
        case "lab":
            return rng.choice(words.LABS)[0]
        case "lab_value":
            name, low, high, decimals = rng.choice(words.LABS)
            value = round(rng.uniform(low, high), decimals)
            return f"{name} {lab_link} {str(value if decimals else int(value)).replace('.', decimal_mark)}"
        case "size":
            return f"{rng.randint(1, 9)}{decimal_mark}{rng.randint(1, 9)}"
    return None


def _number_slot(slot: str, rng: random.Random) -> str | None:
    """Fillers that are numbers or built from numbers; None when `slot` is a word-list slot."""
    match slot:
        case "patient":
            return f"a {rng.randint(18, 96)}-year-old {rng.choice(W.PATIENTS)}"
        case "ebl":  # estimated blood loss, milliliters
            return str(50 * rng.randint(1, 18))
        case "clock":
            return f"{rng.randint(1, 12)} {rng.choice(['in the morning', 'at night'])}"
        case "sys_low":
            return rng.choice(["90", "95", "100", "110"])
    return number_filler(slot, rng)


def make_sentence(template: str, rng: random.Random, lists: dict[str, list[str]]) -> str:
    """Fill a template's `{slot}` fields; repeated slots (`{drug}`, `{drug2}`) get distinct fillers."""
    he = rng.choice(W.HE)  # one pronoun per sentence, so "he ... his" agree
    text = fill_template(template, rng, lists, _number_slot, {"he": he, "his": W.HIS[he], "him": W.HIM[he]})
    text = re.sub(r"\b([Aa]) ([\w.]+)", _article, text)
    return text[0].upper() + text[1:]


def fill_template(template: str, rng: random.Random, lists: dict[str, list[str]],
                  number: Callable[[str, random.Random], str | None], values: dict[str, str] | None = None) -> str:
    """`template` with every `{slot}` field filled, in order: `number(slot, rng)` where it gives a number
    filler, else a word of `lists[slot]`; fields in `values` are given. A repeated slot (`{drug}`,
    `{drug2}`) is redrawn until it differs from the slot's other fillers."""
    values = dict(values or {})
    for _, field, _, _ in string.Formatter().parse(template):
        if not field or field in values:
            continue
        slot = field.rstrip("0123456789")
        for _ in range(20):  # redraw until it differs from the slot's other fillers
            value = number(slot, rng)
            value = value if value is not None else rng.choice(lists[slot])
            if value not in values.values():
                break
        values[field] = value
    return template.format(**values)


def _article(match: re.Match) -> str:
    """'a old' -> 'an old', 'a 8.5' -> 'an 8.5', 'a 18-year-old' -> 'an 18-year-old'."""
    a, word = match.groups()
    vowel_sound = word[0] in "aeioAEIO" or word.startswith("8") or re.match(r"1[18](\D|$)", word)
    return f"{a}n {word}" if vowel_sound else match.group(0)


def _term_pattern(term: str) -> re.Pattern:
    return re.compile(rf"(?<![\w]){re.escape(term.lower())}(?![\w])")


def term_in(term: str, text: str) -> bool:
    """Whole-word, case-insensitive: 'amoxicillin' is in 'amoxicillin-clavulanate', not in 'amoxicillinx'."""
    text = text.lower()
    return term.lower() in text and _term_pattern(term).search(text) is not None  # cheap test first


def choose_domain_only_terms(rng: random.Random, words=W) -> list[str]:
    """Drug names and procedures kept out of train; only terms that no other list entry contains.
    `words`: the module of word lists (English by default)."""
    entries = {w for ws in words.WORD_SLOTS.values() for w in ws} | {lab[0] for lab in words.LABS}
    vocabulary = "\n".join(sorted(entries | set(words.CLINICAL_TEMPLATES + words.GENERAL_TEMPLATES))).lower()

    def separable(term: str) -> bool:
        t = term.lower()  # occurs in its own entry only (the substring count is a cheap first test)
        return vocabulary.count(t) == 1 or len(_term_pattern(t).findall(vocabulary)) == 1

    chosen = []
    for terms, share in ((words.DRUGS, DOMAIN_ONLY_DRUG_SHARE), (words.PROCEDURES, DOMAIN_ONLY_PROCEDURE_SHARE)):
        candidates = [t for t in terms if separable(t)]
        chosen += sorted(rng.sample(candidates, round(share * len(terms))))
    return chosen


# ------------------------------------------------------------------------------------------ audio
def check_binaries() -> None:
    """Raise a RuntimeError naming the first missing synthesis binary and how to install it."""
    for binary in BINARIES:
        if shutil.which(binary) is None:
            raise RuntimeError(
                f"'{binary}' is not on PATH; the demo corpus needs espeak-ng, flite and sox. "
                f"`make demo` installs them (apt-get install -y espeak-ng flite sox)."
            )


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    done = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return done.stdout


def tool_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, check=False)  # flite exits 1 here
    lines = (done.stdout + done.stderr).decode(errors="replace").splitlines()
    return next((line.strip() for line in lines if re.search(r"\d+\.\d+", line)), "unknown")


def _sox_effects(channel: str) -> list[str]:
    effects = ["highpass", "60"]
    if channel == "phone":  # narrowband telephone: band-limit, compress, round trip through 8 kHz
        effects += ["sinc", "300-3400", "compand", "0.02,0.20", "-60,-60,-30,-16,0,-8", "-6",
                    "rate", "8000"]
    return effects + ["gain", "-n", "-3", "pad", str(PAD_SECONDS[0]), str(PAD_SECONDS[1])]


def render(utt: PlannedClip, out_dir: Path) -> float:
    """Synthesize one utterance to a 16 kHz mono 16-bit WAV file; return its duration in seconds."""
    v = utt.voice
    if v.engine == "espeak":
        wav = _run(["espeak-ng", "--stdout", "-v", v.name, "-s", str(int(utt.speed)),
                    "-p", str(utt.pitch), utt.text])
    else:
        wav = _run(["flite", "-voice", v.name, "--setf", f"duration_stretch={utt.speed:.2f}",
                    "-t", utt.text, "-o", "/dev/stdout"])
    raw = _run(["sox", "-D", "-t", "wav", "-", "-t", "raw", "-e", "signed", "-b", "16",
                "-r", str(SAMPLE_RATE), "-c", "1", "-", *_sox_effects(v.channel)], stdin=wav)
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if v.channel == "noise":
        rng = np.random.default_rng(utt.noise_seed)
        snr_db = rng.uniform(*NOISE_SNR_DB)
        rms = float(np.sqrt(np.mean(audio**2)))
        audio = audio + rng.normal(0.0, rms * 10 ** (-snr_db / 20), audio.shape).astype(np.float32)
    path = out_dir / utt.path
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    return sf.info(path).frames / SAMPLE_RATE


# ----------------------------------------------------------------------------------------- corpus
def pick_voice(rng: random.Random, voices: dict[Voice, int]) -> Voice:
    return rng.choices(list(voices), weights=list(voices.values()))[0]


def plan_corpus(seed: int, n_train: int, n_domain: int, n_heldout: int, n_replay: int = 0, n_domain_dev: int = 0,
                n_heldout_dev: int = 0) -> tuple[list[PlannedClip], list[str]]:
    """Decide every utterance (text, voice, prosody, path) from the seed; return them and the domain-only terms.

    Each group draws from its own stream (`Random(f"{seed}/domain/clinical")`, ...), so editing the
    everyday templates does not reshuffle the domain set. String seeds are hashed with SHA-512 by
    `random`, independent of PYTHONHASHSEED. The replay split, then the dev splits, are drawn last, so
    adding them changed no clip of the others (the test sets kept every clip and every number).
    """
    domain_only, train_lists, all_lists = term_lists(seed)
    n_general = round(GENERAL_SHARE_TRAIN * n_train)
    groups = [  # (split, kind, count, templates, word lists, voices)
        ("train", "clinical", n_train - n_general, W.CLINICAL_TEMPLATES, train_lists, TRAIN_CLINICAL_VOICES),
        ("train", "everyday", n_general, W.GENERAL_TEMPLATES, train_lists, TRAIN_GENERAL_VOICES),
        ("domain", "clinical", n_domain, W.CLINICAL_TEMPLATES, all_lists, DOMAIN_VOICES),
        ("heldout", "everyday", n_heldout, W.GENERAL_TEMPLATES, all_lists, HELDOUT_VOICES),
        ("replay", "everyday", n_replay, W.GENERAL_TEMPLATES, train_lists, TRAIN_GENERAL_VOICES),
        ("domain_dev", "clinical", n_domain_dev, W.CLINICAL_TEMPLATES, all_lists, DOMAIN_VOICES),
        ("heldout_dev", "everyday", n_heldout_dev, W.GENERAL_TEMPLATES, all_lists, HELDOUT_VOICES),
    ]
    planned = draw_clips(seed, groups, SPLITS, make_sentence)
    random.Random(f"{seed}/train/order").shuffle(planned["train"])  # interleave clinical and everyday
    return with_paths(planned, CLIP_PREFIX), domain_only


def term_lists(seed: int, words=W) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """The domain-only terms of this seed, the word lists without them (for the training splits) and with
    them (for evaluation). `words`: the module of word lists (English by default)."""
    domain_only = choose_domain_only_terms(random.Random(f"{seed}/terms"), words)
    return (domain_only, word_lists(set(domain_only), allow_domain_only=False, words=words),
            word_lists(set(domain_only), allow_domain_only=True, words=words))


def with_paths(planned: dict[str, list[PlannedClip]], prefixes: dict[str, str]) -> list[PlannedClip]:
    """Every split's clips in order with their file: audio/<split>/<prefix><index>.wav, the prefix
    `prefixes[split]` or the split's first letter."""
    return [
        dataclasses.replace(u, path=f"audio/{split}/{prefixes.get(split, split[0])}{i:05d}.wav")
        for split, items in planned.items() for i, u in enumerate(items)
    ]


def draw_clips(seed: int, groups: list[tuple], splits: tuple[str, ...], sentence) -> dict[str, list[PlannedClip]]:
    """The clips of each split, without paths: per group (split, kind, count, templates, word lists, voices)
    a stream `Random(f"{seed}/{split}/{kind}")` draws each sentence (`sentence(template, rng, lists)`, redrawn
    until no split has used it), its voice and its prosody."""
    seen: set[str] = set()  # every sentence is used once across all splits
    planned: dict[str, list[PlannedClip]] = {split: [] for split in splits}
    for split, kind, count, templates, lists, voices in groups:
        rng = random.Random(f"{seed}/{split}/{kind}")
        for _ in range(count):
            text = sentence(rng.choice(templates), rng, lists)
            while text.lower() in seen:
                text = sentence(rng.choice(templates), rng, lists)
            seen.add(text.lower())
            voice = pick_voice(rng, voices)
            if voice.engine == "espeak":
                speed, pitch = float(rng.randint(140, 175)), rng.randint(35, 65)  # words/minute, 0-99
            else:
                speed, pitch = round(rng.uniform(0.95, 1.10), 2), 0  # duration stretch
            planned[split].append(PlannedClip(split, "", text, voice, speed, pitch, rng.randrange(2**32), kind))
    return planned


SPLITS = ("train", "domain", "heldout", "replay", "domain_dev", "heldout_dev")
CLIP_PREFIX = {"domain_dev": "dd", "heldout_dev": "hd"}  # file names: d00012.wav (domain), dd00012.wav (domain dev)
TRAINING_SPLITS = ("train", "replay")  # what a run may train on: domain-only terms and voices stay out


def check_splits(utterances: list[PlannedClip], domain_only: list[str], splits: tuple[str, ...] = SPLITS,
                 training_splits: tuple[str, ...] = TRAINING_SPLITS, domain_only_voices: dict | None = None) -> None:
    """Raise AssertionError unless no sentence is in two splits, domain-only terms and voices miss the
    training splits, and replay shares no voice with heldout. The defaults are the English corpus's."""
    domain_only_voices = DOMAIN_ONLY_VOICES if domain_only_voices is None else domain_only_voices
    texts = {s: {u.text.lower() for u in utterances if u.split == s} for s in splits}
    for i, one in enumerate(splits):
        for two in splits[i + 1 :]:
            if texts[one] & texts[two]:
                raise AssertionError(f"a sentence occurs in {one} and {two}: {sorted(texts[one] & texts[two])[:3]}")
    voices = {s: {u.voice.speaker_id for u in utterances if u.split == s} for s in splits}
    for split in training_splits:
        leaked = [t for t in domain_only if term_in(t, "\n".join(texts[split]))]
        if leaked:
            raise AssertionError(f"domain-only terms occur in {split}: {leaked}")
        if voices[split] & {v.speaker_id for v in domain_only_voices}:
            raise AssertionError(f"a domain-only voice is in {split}")
    heldout_voices = voices["heldout"] | voices["heldout_dev"]
    if voices["replay"] & heldout_voices:
        raise AssertionError(f"a heldout voice is in replay: {sorted(voices['replay'] & heldout_voices)}")


def plan_sha256(utterances: list[PlannedClip]) -> str:
    """Fingerprint of everything a build renders: any change to word lists, voices or seed changes it."""
    return hashlib.sha256(repr(utterances).encode()).hexdigest()


DOMAIN_ONLY_TRAIN = "train_domain_only"  # manifest of train's clinical lines only


def is_complete(out_dir: Path, expected: dict) -> bool:
    """True when `out_dir` holds a finished build of the same plan with every file present."""
    try:
        old = json.loads((out_dir / "corpus.json").read_text())
    except (OSError, ValueError):
        return False
    if any(old.get(k) != v for k, v in expected.items()):
        return False
    for split, n in expected["sizes"].items():
        try:
            rows = [json.loads(line) for line in (out_dir / f"{split}.jsonl").read_text().splitlines()]
        except (OSError, ValueError):
            return False
        if len(rows) != n or not all((out_dir / r["audio_filepath"]).is_file() for r in rows):
            return False
    return (out_dir / "terms.txt").is_file() and (out_dir / f"{DOMAIN_ONLY_TRAIN}.jsonl").is_file()


def build_corpus(
    out_dir: Path = Path("data/demo"), seed: int = 0, n_train: int = 1200, n_domain: int = 520,
    n_heldout: int = 320, jobs: int = 2, force: bool = False, n_replay: int = 240, n_domain_dev: int = 200,
    n_heldout_dev: int = 150,
) -> dict[str, Path]:
    """Synthesize the demo corpus into `out_dir`; return the manifest paths by name (the splits and
    `train_domain_only`).

    Skips the work when `out_dir/corpus.json` records the same version, seed, sizes and plan hash
    (word lists, voices, prosody) and every file is present, unless `force`. `jobs` is the number of
    parallel synthesis processes.
    """
    out_dir = Path(out_dir)
    sizes = {"train": n_train, "domain": n_domain, "heldout": n_heldout, "replay": n_replay,
             "domain_dev": n_domain_dev, "heldout_dev": n_heldout_dev}
    manifests = {name: out_dir / f"{name}.jsonl" for name in (*sizes, DOMAIN_ONLY_TRAIN)}
    start = time.perf_counter()
    utterances, domain_only = plan_corpus(seed, n_train, n_domain, n_heldout, n_replay, n_domain_dev, n_heldout_dev)
    identity = {"version": CORPUS_VERSION, "seed": seed, "sizes": sizes, "plan_sha256": plan_sha256(utterances)}
    if not force and is_complete(out_dir, identity):
        return manifests
    check_binaries()
    check_splits(utterances, domain_only)
    durations = render_all(utterances, out_dir, jobs, "demo corpus: synthesize")
    write_manifests(manifests, utterances, durations, _manifest_rows)
    terms = W.DRUGS + W.PROCEDURES + W.CONDITIONS + W.ANATOMY
    (out_dir / "terms.txt").write_text("\n".join(terms) + "\n")

    def voice_counts(split: str) -> dict[str, int]:
        ids = [u.voice.speaker_id for u in utterances if u.split == split]
        return {v: ids.count(v) for v in sorted(set(ids))}

    summary = {
        **identity, "hours": split_hours(utterances, durations, sizes),
        "voices": {split: voice_counts(split) for split in sizes},
        "domain_only_voices": sorted(v.speaker_id for v in DOMAIN_ONLY_VOICES),
        "domain_only_terms": domain_only,
        "train_general_share": GENERAL_SHARE_TRAIN,
        DOMAIN_ONLY_TRAIN: sum(u.split == "train" and u.kind == "clinical" for u in utterances),
        "build_seconds": round(time.perf_counter() - start, 1), "jobs": jobs,
        "tools": {b: tool_version(b) for b in BINARIES},
    }
    (out_dir / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    return manifests


def render_all(utterances: list[PlannedClip], out_dir: Path, jobs: int, desc: str) -> list[float]:
    """Render every clip into a fresh `out_dir/audio/` with `jobs` threads; their durations in the plan's order.
    The old corpus.json goes first: it is written last, so its presence marks a finished build."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "corpus.json").unlink(missing_ok=True)
    shutil.rmtree(out_dir / "audio", ignore_errors=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # map keeps the plan's order
        return list(progress_bar(pool.map(lambda u: render(u, out_dir), utterances), total=len(utterances),
                                 desc=desc, unit="clip"))


def split_hours(utterances: list[PlannedClip], durations: list[float], splits) -> dict[str, float]:
    """Hours of audio per split (3 decimals), for corpus.json."""
    return {s: round(sum(d for u, d in zip(utterances, durations) if u.split == s) / 3600, 3) for s in splits}


def manifest_row(u: PlannedClip, duration: float) -> dict:
    """A clip's manifest row: audio_filepath, text, duration (s, 4 decimals), speaker_id."""
    return {"audio_filepath": u.path, "text": u.text, "duration": round(duration, 4), "speaker_id": u.voice.speaker_id}


def write_manifests(manifests: dict[str, Path], utterances: list[PlannedClip], durations: list[float],
                    rows: Callable[[PlannedClip, float], Iterable[tuple[str, dict]]]) -> None:
    """Write every manifest in `manifests` (name -> path): `rows(clip, duration)` says which rows a clip
    gives to which manifest, in the plan's order."""
    lines: dict[str, list[str]] = {name: [] for name in manifests}
    for u, d in zip(utterances, durations):
        for name, row in rows(u, d):
            lines[name].append(json.dumps(row, ensure_ascii=False) + "\n")
    for name, path in manifests.items():
        path.write_text("".join(lines[name]))


def _manifest_rows(u: PlannedClip, duration: float) -> Iterator[tuple[str, dict]]:
    """A clip's row in its split, and once more in `train_domain_only` if it is a clinical line of train."""
    row = manifest_row(u, duration)
    if u.split == "replay":  # a replay set says its language: a run in another one refuses it (issue 31)
        row["language"] = "en"
    yield u.split, row
    if u.split == "train" and u.kind == "clinical":
        yield DOMAIN_ONLY_TRAIN, row


def main(argv: list[str] | None = None) -> int:
    """`python -m lorakit.demo.corpus`: build the demo corpus (`lorakit demo-data` with the same options)."""
    parser = argparse.ArgumentParser(prog="lorakit demo-data", description=__doc__.splitlines()[0])
    demo_data_arguments(parser, language="en")
    return build(parser.parse_args(argv))


def build(args: argparse.Namespace) -> int:
    """`lorakit demo-data`: build the corpus from parsed options (`options.demo_data_arguments`), print its manifests."""
    out, sizes = demo_data_settings(args)
    started = time.time()
    manifests = build_corpus(out, args.seed, sizes["train"], sizes["domain"], sizes["heldout"], jobs=args.jobs,
                             force=args.force, n_replay=sizes["replay"], n_domain_dev=sizes["domain_dev"],
                             n_heldout_dev=sizes["heldout_dev"])
    summary, state = build_state(out, started)
    print(f"demo corpus in {out} ({state}):")
    for split, path in manifests.items():
        if split in summary["sizes"]:
            print(f"  {path}: {summary['sizes'][split]} utterances, {summary['hours'][split]} h")
        else:
            print(f"  {path}: {summary[split]} utterances (the clinical lines of train.jsonl)")
    return 0


def build_state(out_dir: Path, started: float) -> tuple[dict, str]:
    """A finished build's corpus.json and a few words on it: built in N s, or (corpus.json older than
    `started`, a `time.time()`) up to date."""
    summary = json.loads((out_dir / "corpus.json").read_text())
    fresh = (out_dir / "corpus.json").stat().st_mtime >= started
    return summary, f"built in {summary['build_seconds']} s" if fresh else "up to date, nothing to do; --force rebuilds"


if __name__ == "__main__":
    sys.exit(main())
