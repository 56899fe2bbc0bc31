"""The command-line options of the data builders, apart from the builders themselves: `lorakit --help`
and every other command build the CLI's parser, and must not pay for the audio libraries a builder
imports (numpy, soundfile, soxr). Imports nothing but argparse and pathlib."""

from __future__ import annotations

import argparse
from pathlib import Path


def real_speech_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `lorakit real-speech` (its CLI subcommand and `real_speech.main` share them)."""
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <project>/data/real)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
