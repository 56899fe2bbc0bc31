"""The real-speech sanity set: human recordings with transcripts that are already on this machine.

Every WER the demo reports is on synthetic voices; these few clips check that a model (and an adapter)
still hears people. Sources, all offline:

- Debian's `pocketsphinx-testdata` (BSD): `librivox/`, five clips of *Sense and Sensibility* read for
  LibriVox, with `transcription`; `cards/`, five people saying playing cards, with `cards.transcription`.
  The TIDIGITS clip is left out: its licence is the LDC's.
- `moonshine-voice==0.0.49` (MIT; later versions ship no `assets/`): `beckett.wav` (10 s, Samuel
  Beckett's "Ever tried. Ever failed...") and `two_cities.wav` (44 s, the opening paragraph of *A Tale of
  Two Cities*, LibriVox). The transcripts of these two are the published texts, written here.

Output (`lorakit real-speech`, default `data/real/`): `real.jsonl` (11 clips, each under Whisper's 30-s
window) and `long.jsonl` (two_cities alone: 44 s is longer than one Whisper window, and a Whisper
evaluation refuses it), audio as 16 kHz mono 16-bit WAV under `audio/`, and `sources.json` (where each
clip came from, its licence). A data builder, not library code: imports nothing from lorakit but config.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..display import progress_bar
from ..env import project_root
from .options import real_speech_arguments

SAMPLE_RATE = 16000  # Hz, what every model here takes
BUILDER_VERSION = 1  # bump when clips or texts change, so an old build is redone
POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
MOONSHINE_VERSION = "0.0.49"  # the last moonshine-voice release that ships assets/ (and tiny-en)
LONG_SECONDS = 30.0  # Whisper's window: longer clips go to long.jsonl

BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
TWO_CITIES = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, "
    "it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of "
    "Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, we had nothing "
    "before us, we were all going direct to Heaven, we were all going direct the other way, in short, the period was "
    "so far like the present period, that some of its noisiest authorities insisted on its being received, for good "
    "or for evil, in the superlative degree of comparison only."
)


class RealSpeechError(RuntimeError):
    """A source package or file is missing or unreadable; the message says which and how to get it."""


@dataclass(frozen=True)
class Clip:
    id: str  # file stem under audio/
    source: Path  # the original recording
    text: str
    speaker_id: str
    origin: str  # package and licence, for sources.json


_LINE = re.compile(r"^\s*<s>\s*(?P<text>.*?)\s*</s>\s*\((?P<id>[^)]+)\)\s*$")


def _sphinx_transcripts(path: Path, speaker: str, origin: str) -> list[Clip]:
    """CMU Sphinx's transcription format, one clip a line: `<s> words </s> (file id)`."""
    if not path.exists():
        raise RealSpeechError(f"{path} not found: the real-speech set needs Debian's pocketsphinx-testdata "
                              "(sudo apt-get install pocketsphinx-testdata; `make setup` installs it)")
    clips = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise RealSpeechError(f"{path}, line {lineno}: expected '<s> words </s> (file id)', got {line!r}")
        wav = path.parent / f"{m['id']}.wav"
        if not wav.exists():
            raise RealSpeechError(f"{path}, line {lineno}: its audio {wav} is missing; reinstall pocketsphinx-testdata")
        clips.append(Clip(f"{speaker}-{m['id']}", wav, " ".join(m["text"].split()), speaker, origin))
    if not clips:
        raise RealSpeechError(f"{path}: no transcripts")
    return clips


def moonshine_assets() -> Path:
    """`assets/` of the installed moonshine-voice package (found without importing its native library)."""
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        raise RealSpeechError(f"the real-speech set needs the 'moonshine-voice' package: pip install moonshine-voice=={MOONSHINE_VERSION}")
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    for name in ("beckett.wav", "two_cities.wav"):
        if not (assets / name).exists():
            raise RealSpeechError(f"{assets / name} not found: moonshine-voice {MOONSHINE_VERSION} ships it, later "
                                  f"versions do not: pip install moonshine-voice=={MOONSHINE_VERSION}")
    return assets


def source_clips(pocketsphinx: Path = POCKETSPHINX_DATA) -> list[Clip]:
    """Every clip of the set with its transcript, in manifest order (librivox, cards, beckett, two_cities)."""
    assets = moonshine_assets()
    moonshine = f"moonshine-voice {MOONSHINE_VERSION} assets/ (MIT), a LibriVox reading (public domain)"
    return [
        *_sphinx_transcripts(pocketsphinx / "librivox" / "transcription", "librivox",
                             "pocketsphinx-testdata librivox/ (BSD), LibriVox Sense and Sensibility (public domain)"),
        *_sphinx_transcripts(pocketsphinx / "cards" / "cards.transcription", "cards", "pocketsphinx-testdata cards/ (BSD)"),
        Clip("beckett", assets / "beckett.wav", BECKETT, "moonshine-beckett", moonshine),
        Clip("two_cities", assets / "two_cities.wav", TWO_CITIES, "moonshine-two_cities", moonshine),
    ]


def _to_16k_mono(path: Path) -> np.ndarray:
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise RealSpeechError(f"{path}: unreadable audio ({exc})") from exc
    mono = audio.mean(axis=1)
    return mono if rate == SAMPLE_RATE else soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)


def build_real_speech(out_dir: Path | None = None, force: bool = False, pocketsphinx: Path = POCKETSPHINX_DATA) -> dict[str, Path]:
    """Write `real.jsonl`, `long.jsonl`, `audio/*.wav` and `sources.json` into `out_dir` (default
    data/real); a complete build of this version is left as it is unless `force`."""
    out_dir = Path(out_dir) if out_dir is not None else project_root() / "data" / "real"
    manifests = {"real": out_dir / "real.jsonl", "long": out_dir / "long.jsonl"}
    stamp = out_dir / "sources.json"
    if not force and _complete(out_dir, stamp, manifests):
        return manifests
    clips = source_clips(pocketsphinx)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {"real": [], "long": []}
    sources = []
    for clip in progress_bar(clips, desc="real speech: resample", unit="clip"):
        audio = _to_16k_mono(clip.source)
        rel = f"audio/{clip.id}.wav"
        sf.write(str(out_dir / rel), audio, SAMPLE_RATE, subtype="PCM_16")
        duration = round(len(audio) / SAMPLE_RATE, 3)
        row = {"audio_filepath": rel, "text": clip.text, "duration": duration, "speaker_id": clip.speaker_id}
        rows["long" if duration > LONG_SECONDS else "real"].append(json.dumps(row, ensure_ascii=False) + "\n")
        sources.append({"audio_filepath": rel, "source": str(clip.source), "origin": clip.origin, "seconds": duration})
    for name, path in manifests.items():
        path.write_text("".join(rows[name]))
    stamp.write_text(json.dumps({"builder_version": BUILDER_VERSION, "sample_rate": SAMPLE_RATE,
                                 "clips": {k: len(v) for k, v in rows.items()}, "sources": sources}, indent=2) + "\n")
    return manifests


def _complete(out_dir: Path, stamp: Path, manifests: dict[str, Path]) -> bool:
    if not stamp.exists() or not all(p.exists() for p in manifests.values()):
        return False
    info = json.loads(stamp.read_text())
    return info.get("builder_version") == BUILDER_VERSION and all(
        (out_dir / s["audio_filepath"]).is_file() for s in info.get("sources", []))


def main(argv: list[str] | None = None) -> int:
    """`python -m lorakit.demo.real_speech`: build the real-speech sanity set."""
    parser = argparse.ArgumentParser(prog="lorakit real-speech", description=__doc__.splitlines()[0])
    real_speech_arguments(parser)
    return build(parser.parse_args(argv))


def build(args: argparse.Namespace) -> int:
    """`lorakit real-speech`: build the set from parsed options (`options.real_speech_arguments`)."""
    try:
        manifests = build_real_speech(args.out, force=args.force)
    except RealSpeechError as exc:
        print(f"lorakit real-speech: {exc}", file=sys.stderr)
        return 2
    for name, path in manifests.items():
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        print(f"{path}: {len(lines)} clips, {sum(x['duration'] for x in lines):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
