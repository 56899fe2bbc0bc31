"""The command-line options of the data builders, apart from the builders themselves: `lorakit --help`
and every other command build the CLI's parser, and must not pay for the audio libraries a builder
imports (numpy, soundfile, soxr). Imports nothing but argparse and pathlib."""

from __future__ import annotations

import argparse
from pathlib import Path

# `lorakit demo-data`'s two scenarios: where each writes by default (relative to the working directory, as the
# Makefile runs it from the project root) and how many clips each split gets. The builders read these.
DEMO_FOLDERS = {"en": Path("data/demo"), "fr": Path("data/demo_fr")}
DEMO_SIZES = {
    "en": {"train": 1200, "domain": 520, "heldout": 320, "replay": 240, "domain_dev": 200, "heldout_dev": 150},
    "fr": {"train_domain_only": 600, "domain": 520, "heldout": 320, "replay": 300, "domain_dev": 200, "heldout_dev": 150},
}
SIZE_HELP = {"train": "training clips", "train_domain_only": "training clips, clinical dictation only",
             "domain": "domain test clips", "heldout": "heldout test clips", "replay": "general-speech clips for replay_manifest",
             "domain_dev": "domain clips for selection (dev)", "heldout_dev": "heldout clips for selection (dev)"}


def real_speech_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `lorakit real-speech` (its CLI subcommand and `real_speech.main` share them)."""
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <project>/data/real)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")


def size_option(split: str) -> str:
    """The option that sizes a split: train_domain_only -> --n-train-domain-only."""
    return f"--n-{split.replace('_', '-')}"


def demo_data_arguments(parser: argparse.ArgumentParser, language: str | None = None) -> None:
    """The options of `lorakit demo-data` (its CLI subcommand, `corpus.main` and `corpus_fr.main` share them).
    With `language` None (the CLI) `--language` chooses the scenario and each size option is declared once for
    both, defaulting to None (`demo_data_settings` fills in the scenario's); a builder's own main passes its language."""
    languages = [language] if language else list(DEMO_SIZES)
    if language:
        parser.set_defaults(language=language)
    else:
        parser.add_argument("--language", choices=languages, default="en",
                            help="en: the English demo corpus (default); fr: the French domain-only scenario")
    folders = "; ".join(f"{lang}: {DEMO_FOLDERS[lang]}" for lang in languages)
    parser.add_argument("--out", type=Path, default=DEMO_FOLDERS[language] if language else None,
                        help=f"corpus folder (default {folders})")
    parser.add_argument("--seed", type=int, default=0, help="another seed draws other sentences, voices and splits (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel synthesis processes (default 2)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching corpus exists")
    for split in [s for s in SIZE_HELP if any(s in DEMO_SIZES[lang] for lang in languages)]:
        defaults = ", ".join(f"{lang} {DEMO_SIZES[lang][split]}" for lang in languages if split in DEMO_SIZES[lang])
        parser.add_argument(size_option(split), type=int, metavar="N", dest=f"n_{split}",
                            default=DEMO_SIZES[language][split] if language else None,
                            help=f"{SIZE_HELP[split]} (default {defaults})")


def demo_data_settings(args: argparse.Namespace) -> tuple[Path, dict[str, int]]:
    """The corpus folder and split sizes parsed `args` ask for: the scenario's defaults with each option given over
    them. A size option of the other scenario is refused (ValueError, one line) rather than dropped silently."""
    defaults = DEMO_SIZES[args.language]
    foreign = [size_option(split) for split in SIZE_HELP if split not in defaults and getattr(args, f"n_{split}", None) is not None]
    if foreign:
        takes = ", ".join(size_option(split) for split in defaults)
        raise ValueError(f"{', '.join(foreign)}: not a size of the --language {args.language} corpus (it takes {takes})")
    sizes = {}
    for split, default in defaults.items():
        given = getattr(args, f"n_{split}")
        sizes[split] = default if given is None else given
    return args.out or DEMO_FOLDERS[args.language], sizes
