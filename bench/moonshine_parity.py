"""bundled:moonshine-tiny against onnxruntime on the same .ort files and the same clips: hypotheses and WER.

    python bench/moonshine_parity.py [manifest.jsonl ...]

Always decodes moonshine-voice's two LibriVox clips (beckett.wav 10 s, two_cities.wav 44 s), then every line
of the manifests given. Both sides get the same audio (lorakit's path: mono, 16 kHz, RMS 0.075) and greedy
decoding with the same stopping rule; the port runs through lorakit's SpeechModel, batch 1. Prints one JSON
object: per-set WER of each side (against the manifest's text; beckett's is the quotation it reads), how many
hypotheses are identical, the differing pairs, and seconds per clip.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from lorakit.experiment.audio import load_audio
from lorakit.experiment.convert_ort_moonshine import BUNDLED_MOONSHINE, OrtReference, bundled_moonshine_dir, source_dir
from lorakit.scoring import normalize
from lorakit.experiment.manifests import read_manifest
from lorakit.experiment.models import load_model

BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."  # Worstward Ho, as read in beckett.wav


def _wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    pairs = [(normalize(r), normalize(h)) for r, h in zip(refs, hyps) if normalize(r)]
    return jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def main(manifests: list[str]) -> dict:
    started = time.perf_counter()
    bundled_moonshine_dir()
    convert_s = time.perf_counter() - started
    sm, reference = load_model(BUNDLED_MOONSHINE), OrtReference()
    assets = source_dir().parent
    sets = {"librivox": [(str(assets / "beckett.wav"), BECKETT), (str(assets / "two_cities.wav"), "")]}
    for path in manifests:
        sets[Path(path).stem] = [(u.audio_filepath, u.text) for u in read_manifest(path).utterances]
    report: dict = {"model": BUNDLED_MOONSHINE, "load_or_convert_s": round(convert_s, 2), "sets": {}}
    for name, clips in sets.items():
        ours, theirs, t_ours, t_theirs = [], [], 0.0, 0.0
        for path, _ in clips:
            audio = load_audio(path, sampling_rate=16000, rms_target=0.075)
            x = torch.from_numpy(audio[None])
            t = time.perf_counter()
            ids = sm.generate({"input_values": x, "attention_mask": torch.ones_like(x, dtype=torch.long)}, max_new_tokens=448)
            t_ours += time.perf_counter() - t
            t = time.perf_counter()
            tokens, _ = reference.generate(audio)
            t_theirs += time.perf_counter() - t
            ours.append(sm.decode(ids)[0])
            print(f"{name} {Path(path).name}: {ours[-1]!r}", file=sys.stderr, flush=True)
            theirs.append(sm.processor.tokenizer.decode(tokens, skip_special_tokens=True).strip())
        refs = [text for _, text in clips]
        report["sets"][name] = {
            "clips": len(clips), "identical": sum(a == b for a, b in zip(ours, theirs)),
            "wer_port": _wer(refs, ours) if any(refs) else None, "wer_onnxruntime": _wer(refs, theirs) if any(refs) else None,
            "s_per_clip_port": round(t_ours / len(clips), 2), "s_per_clip_onnxruntime": round(t_theirs / len(clips), 2),
            "differ": [{"clip": Path(p).name, "port": a, "onnxruntime": b} for (p, _), a, b in zip(clips, ours, theirs) if a != b],
            "hypotheses": [{"clip": Path(p).name, "port": a} for (p, _), a in zip(clips, ours)] if name == "librivox" else None,
        }
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
