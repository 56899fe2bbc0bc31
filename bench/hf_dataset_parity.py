"""The same clips as a JSONL manifest and as a Hugging Face dataset (built with `datasets`, an `Audio`
column, saved with save_to_disk: the bytes embedded), evaluated by the base model through lorakit's own
evaluation path: how the README's "Hugging Face datasets as input" numbers were measured.

    python bench/hf_dataset_parity.py data/demo/domain_dev.jsonl 200   # manifest, clips (the first N lines)

Prints one JSON line per path (WER, S/D/I, words, clips, seconds) and one with the number of clips whose
decoded arrays and hypotheses are identical between the two paths.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch

from lorakit.config import RunConfig
from lorakit.env import project_root
from lorakit.experiment.audio import load_audio
from lorakit.experiment.evaluate import evaluate
from lorakit.experiment.hf_datasets import read_input
from lorakit.experiment.features import Inputs
from lorakit.experiment.manifests import read_manifest
from lorakit.experiment.models import load_model


def main(manifest: str, n: int) -> None:
    path = Path(manifest) if Path(manifest).is_absolute() else project_root() / manifest
    jsonl = read_manifest(path).utterances[:n]
    cfg = RunConfig()  # the default recipe's model, preprocessing and generation
    sm = load_model(cfg.model)
    inputs = Inputs(sm, cfg.rms_target, None, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        ds = datasets.Dataset.from_dict({"audio": [u.audio_filepath for u in jsonl], "text": [u.text for u in jsonl],
                                         "speaker_id": [u.speaker_id for u in jsonl]})
        folder = Path(tmp) / path.stem
        ds.cast_column("audio", datasets.Audio()).save_to_disk(str(folder))
        hf = read_input(folder, speaker_column="speaker_id").utterances
        results = {}
        for name, utts in (("jsonl", jsonl), ("dataset", hf)):
            started = time.perf_counter()
            res = evaluate(sm, utts, inputs, cfg.eval_batch_size, cfg.max_new_tokens, desc=name)
            results[name] = res
            print(json.dumps({"path": name, **res.summary(), "seconds": round(time.perf_counter() - started, 1)}))
        same_audio = sum(np.array_equal(load_audio(a.audio_filepath), load_audio(b.audio_filepath)) for a, b in zip(jsonl, hf))
    same_hyps = sum(a["hyp"] == b["hyp"] for a, b in zip(results["jsonl"].rows, results["dataset"].rows))
    print(json.dumps({"clips": len(jsonl), "identical_arrays": int(same_audio), "identical_hypotheses": same_hyps,
                      "model": cfg.model, "datasets": datasets.__version__}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200)
