"""The parity report: the same seeded sample of a run's domain (and heldout) clips decoded with the
unmerged adapter (the reference: how the run evaluated it) and with every exported form, through the
same preprocessing, batches and greedy settings. Written to `export/parity.json` and `parity.md`:
WER with S/D/I, how many hypotheses differ from the reference (the first few shown), utterances per
second. Acceptance: a merged model gives identical hypotheses, or a WER within 0.1 pt with the
differences listed.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..config import project_root
from ..record import atomic_write_text, markdown_table, now, write_json
from ..experiment.batches import subset
from ..experiment.evaluate import score
from ..experiment.manifests import Utterance, read_manifest
from ..experiment.models import SpeechModel, load_model, pick_autocast, pick_device
from .transcribe import Source, decode_utterances, load_source

REFERENCE = "unmerged"
TOLERANCE_PTS = {"merged": 0.1}  # WER points a form may differ from the reference when hypotheses differ
SHOWN_DIFFS = 5


def parity_sample(src: Source, sample: int = 200) -> dict[str, list[Utterance]]:
    """The run's domain and heldout manifests, each a seeded subset of `sample` clips (the run's seed)."""
    out = {}
    seed = int(src.run_config.get("seed", 42))
    for name in ("domain", "heldout"):
        value = src.run_config.get(f"{name}_manifest")
        if not value:
            continue
        path = Path(value) if Path(value).is_absolute() else project_root() / value
        out[name] = subset(read_manifest(path).utterances, sample, seed)
    if not out:
        raise ValueError("parity needs a run record with a domain manifest (config.json); a bare adapter has none")
    return out


def _decode_form(sm: SpeechModel, sets: dict[str, list[Utterance]], src: Source, device: torch.device) -> dict:
    out = {}
    autocast = pick_autocast(src.precision, device)
    warm = next(iter(sets.values()))[:1]  # one untimed clip first: the first call pays for lazy setup, not the form
    decode_utterances(sm, warm, src.rms_target, src.max_new_tokens, 1, device, autocast, progress=False)
    for name, utts in sets.items():
        started = time.perf_counter()
        hyps, _ = decode_utterances(sm, utts, src.rms_target, src.max_new_tokens, src.batch_size, device, autocast, progress=False)
        seconds = time.perf_counter() - started
        out[name] = {"result": score(utts, hyps), "utt_per_s": len(utts) / max(seconds, 1e-9)}
    return out


def compare(reference: dict, form: dict, form_name: str) -> dict:
    """Per set: WER/S/D/I, utt/s, hypotheses differing from the reference (first few), and the verdict."""
    sets, ok = {}, True
    for name, ref in reference.items():
        r, f = ref["result"], form[name]["result"]
        diffs = [{"id": a["id"], "reference": a["hyp"], form_name: b["hyp"]} for a, b in zip(r.rows, f.rows) if a["hyp"] != b["hyp"]]
        delta = (f.wer - r.wer) * 100
        same = not diffs
        within = same or abs(delta) <= TOLERANCE_PTS.get(form_name, float("inf")) + 1e-9
        ok = ok and within
        sets[name] = {**f.summary(), "utt_per_s": round(form[name]["utt_per_s"], 2), "wer_delta_pts": round(delta, 4),
                      "differ": len(diffs), "first_diffs": diffs[:SHOWN_DIFFS], "identical": same, "within_tolerance": within}
    return {"sets": sets, "ok": ok}


def _reference_sets(reference: dict) -> dict:
    return {name: {**d["result"].summary(), "utt_per_s": round(d["utt_per_s"], 2), "differ": 0, "identical": True}
            for name, d in reference.items()}


def parity_report(src: Source, forms: dict[str, Path], sample: int = 200, device: str = "cpu", out_dir: Path | None = None) -> dict:
    """Decode the sample with the unmerged adapter and each exported form (a transformers folder), write
    `parity.json` and `parity.md` beside the forms (`<run>/export/`), and return the report."""
    dev = pick_device(device)
    sets = parity_sample(src, sample)
    reference = _decode_form(load_source(src, dev), sets, src, dev)
    report = {"run": src.run_folder.name if src.run_folder else None, "model": src.model, "adapter": str(src.adapter),
              "device": str(dev), "sample": sample, "seed": int(src.run_config.get("seed", 42)), "created": now(),
              "forms": {REFERENCE: {"path": str(src.adapter), "sets": _reference_sets(reference), "ok": True}}}
    for name, path in forms.items():
        sm = load_model(str(path), device=dev, language=src.language, task=src.task)
        sm.model.eval()
        report["forms"][name] = {"path": str(path), **compare(reference, _decode_form(sm, sets, src, dev), name)}
    report["acceptance"] = {name: {"ok": f["ok"], "tolerance_pts": TOLERANCE_PTS.get(name),
                                   "identical": all(s["identical"] for s in f["sets"].values())}
                            for name, f in report["forms"].items() if name != REFERENCE}
    out_dir = Path(out_dir) if out_dir is not None else next(iter(forms.values())).parent
    write_json(out_dir / "parity.json", report)
    atomic_write_text(out_dir / "parity.md", parity_markdown(report))
    return report


COLUMNS = [("form", "form"), ("set", "set"), ("n", "n"), ("wer", "WER %"), ("sdi", "S/D/I"), ("differ", "differ from unmerged"),
           ("utt_per_s", "utt/s"), ("verdict", "verdict")]


def parity_markdown(report: dict) -> str:
    rows = []
    for form, f in report["forms"].items():
        for name, s in f["sets"].items():
            verdict = "reference" if form == REFERENCE else ("identical" if s["identical"] else
                                                             ("within tolerance" if s["within_tolerance"] else "DIFFERS"))
            rows.append({"form": form, "set": name, "n": s["n"], "wer": f"{s['wer'] * 100:.2f}", "sdi": f"{s['sub']}/{s['del']}/{s['ins']}",
                         "differ": s["differ"], "utt_per_s": s["utt_per_s"], "verdict": verdict})
    lines = [f"# Parity: {report['run']} ({report['device']}, seeded sample of {report['sample']} per set)", "",
             markdown_table(rows, COLUMNS), ""]
    for form, f in report["forms"].items():
        for name, s in f["sets"].items():
            for d in s.get("first_diffs", []):
                lines.append(f"- {form} / {name} / `{d['id']}`: unmerged `{d['reference']}` -> `{d[form]}`")
    return "\n".join(lines).rstrip() + "\n"
