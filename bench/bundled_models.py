"""Measure the bundled models (Whisper tiny.en, Whisper base, Moonshine tiny) for the README's table: conversion time (a fresh conversion into
a scratch folder), size, and baseline WER on the real-speech set and on seeded subsets of the demo's
domain and heldout test sets (the same `subset` a run's max_eval_utterances draws).

    python bench/bundled_models.py [--clips 100] [--models bundled:whisper-tiny.en,bundled:whisper-base,bundled:moonshine-tiny]

Prints one JSON line per model (and writes bench/results/bundled_models.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from lorakit.env import project_root
from lorakit.demo.real_speech import build_real_speech
from lorakit.experiment import convert_ct2_whisper, convert_ort_moonshine
from lorakit.experiment.batches import subset
from lorakit.experiment.evaluate import evaluate
from lorakit.experiment.features import Inputs
from lorakit.experiment.manifests import read_manifest
from lorakit.experiment.models import load_model


def convert_once(name: str) -> tuple[float, str, list[Path]]:
    """A fresh conversion into a scratch folder: its seconds, the source package and the source files."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if name == convert_ort_moonshine.BUNDLED_MOONSHINE:
            src = convert_ort_moonshine.source_dir()
            convert_ort_moonshine.convert(src, Path(tmp) / "m", convert_ort_moonshine.tokenizer_file())
            package, parts = convert_ort_moonshine.SOURCE_PACKAGE, sorted(src.glob("*.ort"))
        else:
            convert_ct2_whisper.convert(convert_ct2_whisper.source_dir(name), Path(tmp) / "m", parts=convert_ct2_whisper.source_parts(name), name=name)
            package, parts = convert_ct2_whisper.bundled_spec(name).package, convert_ct2_whisper.source_parts(name)
        return time.perf_counter() - started, package, parts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=100, help="seeded clips of domain.jsonl and heldout.jsonl (0: all)")
    parser.add_argument("--models", default=",".join([m.name for m in convert_ct2_whisper.BUNDLED_MODELS] + [convert_ort_moonshine.BUNDLED_MOONSHINE]))
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    root = project_root()
    sets = {"real": read_manifest(build_real_speech(root / "data" / "real")["real"]).utterances}
    for name in ("domain", "heldout"):
        utts = read_manifest(root / "data" / "demo" / f"{name}.jsonl").utterances
        sets[name] = subset(utts, args.clips, args.seed) if args.clips else utts
    results = []
    for name in args.models.split(","):
        seconds, package, parts = convert_once(name)
        sm = load_model(name)
        sm.model.eval()
        row = {"model": name, "package": package, "conversion_s": round(seconds, 1),
               "parameters_M": round(sum(p.numel() for p in sm.model.parameters()) / 1e6, 1),
               "source_MB": round(sum(p.stat().st_size for p in parts) / 1e6, 1)}
        inputs = Inputs(sm, 0.075, None, torch.device("cpu"))
        for set_name, utts in sets.items():
            started = time.perf_counter()
            result = evaluate(sm, utts, inputs, batch_size=16, max_new_tokens=128, desc=f"{name} {set_name}")
            row[set_name] = {"wer": round(result.wer * 100, 2), "clips": len(utts), "words": result.ref_words,
                             "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(row), flush=True)
        results.append(row)
    out = root / "bench" / "results" / "bundled_models.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
