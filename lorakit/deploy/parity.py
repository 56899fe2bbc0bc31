"""The parity report: the same seeded sample of a run's domain (and heldout) clips decoded with the
unmerged adapter (the reference: how the run evaluated it) and with every exported form, through the
same preprocessing, batches and greedy settings. Written to `export/parity.json` and `parity.md`:
WER with S/D/I, how many hypotheses differ from the reference (the first few shown), utterances per
second. Acceptance: a merged model gives identical hypotheses, or a WER within 0.1 pt with the
differences listed; CTranslate2 float32 within 0.2 pt; float16 and int8 are reported as measured.

A CTranslate2 form is decoded by `ct2.CT2SpeechModel` through the very same `decode_utterances` (audio,
features, batches, prompt, greedy, token limit) on as many CPU threads as PyTorch uses here, so the
utterances per second of every form compare like for like.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from ..params import is_hub_spec
from ..env import project_path
from ..files import atomic_write_text, write_json
from ..record import now
from ..display import markdown_table
from ..experiment.batches import subset
from ..experiment.evaluate import score
from ..experiment.hf_datasets import read_input
from ..experiment.manifests import Utterance
from ..experiment.models import SpeechModel, load_model, pick_autocast, pick_device
from . import ct2
from .faster_whisper_parity import cause_variants, causes_markdown, export_settings, faster_whisper_rows
from .transcribe import Source, decode_utterances, load_source

REFERENCE = "unmerged"
TOLERANCE_PTS = {"merged": 0.1, "ct2-float32": 0.2}  # WER points a form may differ from the reference
# when its hypotheses differ; a form without one (ct2-float16, ct2-int8) is reported as measured
SHOWN_DIFFS = 5
FW_TOLERANCE_PTS = 0.5  # WER points the export README's faster-whisper call may differ from the kit at float32
FW_ACCEPTED_FORM = "ct2-float32"  # int8 and float16 rows are reported as measured


def parity_sample(src: Source, sample: int = 200) -> dict[str, list[Utterance]]:
    """The run's domain and heldout manifests, each a seeded subset of `sample` clips (the run's seed)."""
    out = {}
    seed = int(src.run_config.get("seed", 42))
    for name in ("domain", "heldout"):
        value = src.run_config.get(f"{name}_manifest")
        if not value:
            continue
        spec = value if is_hub_spec(value) else str(project_path(value))
        columns = {k: src.run_config[k] for k in ("audio_column", "text_column", "speaker_column") if k in src.run_config}
        out[name] = subset(read_input(spec, **columns).utterances, sample, seed)
    if not out:
        raise ValueError("parity needs a run record with a domain manifest (config.json); a bare adapter has none")
    return out


def _decode_form(sm: SpeechModel, sets: dict[str, list[Utterance]], src: Source, device: torch.device) -> dict:
    out = {}
    autocast = pick_autocast(src.precision, device)
    warm = next(iter(sets.values()))[:1]  # one untimed clip first: the first call pays for lazy setup, not the form
    decode_utterances(sm, warm, src.rms_target, src.max_new_tokens, 1, device, autocast, progress=False)
    for name, utts in sets.items():
        started, cpu_started = time.perf_counter(), time.process_time()
        hyps, _ = decode_utterances(sm, utts, src.rms_target, src.max_new_tokens, src.batch_size, device, autocast, progress=False)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        # CPU seconds of this process (every thread, CTranslate2's too) hardly move when other programs share the cores
        out[name] = {"result": score(utts, hyps, sm.text_language), "utt_per_s": len(utts) / max(seconds, 1e-9),
                     "utt_per_cpu_s": len(utts) / max(cpu_seconds, 1e-9)}
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
        sets[name] = {**f.summary(), "utt_per_s": round(form[name]["utt_per_s"], 2), "utt_per_cpu_s": round(form[name]["utt_per_cpu_s"], 2),
                      "wer_delta_pts": round(delta, 4),
                      "differ": len(diffs), "first_diffs": diffs[:SHOWN_DIFFS], "identical": same, "within_tolerance": within}
    return {"sets": sets, "ok": ok}


def _reference_sets(reference: dict) -> dict:
    return {name: {**d["result"].summary(), "utt_per_s": round(d["utt_per_s"], 2), "utt_per_cpu_s": round(d["utt_per_cpu_s"], 2),
                   "differ": 0, "identical": True}
            for name, d in reference.items()}


def load_form(name: str, path: Path, device: torch.device, src: Source | None = None) -> SpeechModel:
    """An exported form ready to decode as the run did: a CTranslate2 folder (on torch's number of threads;
    language, task and text prompt are in its prompt tokens) or a transformers one (given the run's)."""
    if ct2.is_ct2_form(name):
        return ct2.load_ct2(path, threads=torch.get_num_threads(), device="cuda" if device.type == "cuda" else "cpu")
    src = src or Source(model=str(path))
    sm = load_model(str(path), device=device, language=src.language, task=src.task)
    sm.model.eval()
    sm.set_prompt(src.prompt)
    return sm


def _faster_whisper(src: Source, forms: dict[str, Path], sets: dict, reference: dict, report: dict) -> dict:
    """faster-whisper's rows per CTranslate2 form, and the acceptance of the README's call at float32
    (within FW_TOLERANCE_PTS of the kit on every set); without faster-whisper installed, a reported skip."""
    folders = {name: path for name, path in forms.items() if ct2.is_ct2_form(name)}
    if not folders:
        return {}
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        report["left_out"]["faster-whisper"] = f"not installed: {ct2.INSTALL_HINT}"
        return {}
    kit = {name: [r["hyp"] for r in d["result"].rows] for name, d in reference.items()}
    out = {name: faster_whisper_rows(src, path, sets, kit, torch.get_num_threads()) for name, path in folders.items()}
    for name, rows in out.items():
        for row in rows:
            for set_name, s in row["sets"].items():
                s["wer_delta_pts"] = round((s["wer"] - reference[set_name]["result"].wer) * 100, 4)
        readme = next(r for r in rows if r["variant"] == "readme")
        if name == FW_ACCEPTED_FORM:
            report["acceptance"][f"faster-whisper:{name}"] = {
                "ok": all(abs(s["wer_delta_pts"]) <= FW_TOLERANCE_PTS + 1e-9 for s in readme["sets"].values()),
                "tolerance_pts": FW_TOLERANCE_PTS, "reported_only": False,
                "identical": all(s["identical"] == s["n"] for s in readme["sets"].values())}
    return out


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _acceptance(forms: dict) -> dict:
    return {name: {"ok": f["ok"], "tolerance_pts": TOLERANCE_PTS.get(name), "reported_only": name not in TOLERANCE_PTS,
                   "identical": all(s["identical"] for s in f["sets"].values())}
            for name, f in forms.items() if name != REFERENCE}


def parity_report(src: Source, forms: dict[str, Path], sample: int = 200, device: str = "cpu", out_dir: Path | None = None,
                  left_out: dict[str, str] | None = None, faster_whisper: bool = True) -> dict:
    """Decode the sample with the unmerged adapter and each exported form (a transformers or CTranslate2
    folder), write `parity.json` and `parity.md` beside the forms (`<run>/export/`), and return the report.
    `left_out`: forms in the folder that are not compared, with the reason (shown in both files).
    `faster_whisper`: also decode each CTranslate2 form through `WhisperModel.transcribe` as users call it
    (`faster_whisper_parity.user_variants`: the README's call, the defaults, the defaults with VAD)."""
    if not forms:
        raise ValueError("parity needs at least one exported form to compare with the unmerged adapter")
    dev = pick_device(device)
    sets = parity_sample(src, sample)
    reference = _decode_form(load_source(src, dev), sets, src, dev)
    report = {"run": src.run_folder.name if src.run_folder else None, "model": src.model, "adapter": str(src.adapter),
              "device": str(dev), "cpu": cpu_name(), "threads": torch.get_num_threads(), "sample": sample,
              "seed": int(src.run_config.get("seed", 42)), "max_new_tokens": src.max_new_tokens, "batch_size": src.batch_size,
              "created": now(), "left_out": dict(left_out or {}),
              "forms": {REFERENCE: {"path": str(src.adapter), "sets": _reference_sets(reference), "ok": True}}}
    for name, path in forms.items():
        sm = load_form(name, path, dev, src)
        report["forms"][name] = {"path": str(path), **compare(reference, _decode_form(sm, sets, src, dev), name)}
        if ct2.is_ct2_form(name):
            report["forms"][name]["compute_type"] = sm.model.compute_type
        del sm
    report["acceptance"] = _acceptance(report["forms"])
    if faster_whisper:
        report["faster_whisper"] = _faster_whisper(src, forms, sets, reference, report)
    out_dir = Path(out_dir) if out_dir is not None else next(iter(forms.values())).parent
    write_json(out_dir / "parity.json", report)
    atomic_write_text(out_dir / "parity.md", parity_markdown(report))
    return report


COLUMNS = [("form", "form"), ("set", "set"), ("n", "n"), ("wer", "WER %"), ("sdi", "S/D/I"), ("differ", "differ from unmerged"),
           ("utt_per_s", "utt/s"), ("utt_per_cpu_s", "utt/CPU-s"), ("verdict", "verdict")]


def _verdict(form: str, s: dict) -> str:
    if form == REFERENCE:
        return "reference"
    if s["identical"]:
        return "identical"
    if form not in TOLERANCE_PTS:
        return f"reported ({s['wer_delta_pts']:+.2f} pt)"
    return "within tolerance" if s["within_tolerance"] else f"DIFFERS ({s['wer_delta_pts']:+.2f} pt)"


def parity_markdown(report: dict) -> str:
    rows = []
    for form, f in report["forms"].items():
        for name, s in f["sets"].items():
            verdict = _verdict(form, s)
            rows.append({"form": form, "set": name, "n": s["n"], "wer": f"{s['wer'] * 100:.2f}", "sdi": f"{s['sub']}/{s['del']}/{s['ins']}",
                         "differ": s["differ"], "utt_per_s": s["utt_per_s"], "utt_per_cpu_s": s.get("utt_per_cpu_s", ""), "verdict": verdict})
    lines = [f"# Parity: {report['run']} ({report['device']}, {report.get('cpu', '?')}, {report.get('threads', '?')} threads, "
             f"seeded sample of {report['sample']} per set)", "", markdown_table(rows, COLUMNS), ""]
    lines += [f"- left out: {name}: {why}" for name, why in report.get("left_out", {}).items()]
    lines += _faster_whisper_markdown(report.get("faster_whisper") or {})
    for form, f in report["forms"].items():
        for name, s in f["sets"].items():
            for d in s.get("first_diffs", []):
                lines.append(f"- {form} / {name} / `{d['id']}`: unmerged `{d['reference']}` -> `{d[form]}`")
    return "\n".join(lines).rstrip() + "\n"


FW_COLUMNS = [("form", "form"), ("call", "faster-whisper call"), ("set", "set"), ("n", "n"), ("identical", "identical to the kit"),
              ("wer", "WER %"), ("delta", "vs kit (pt)"), ("sdi", "S/D/I"), ("utt_per_cpu_s", "utt/CPU-s")]


def _faster_whisper_markdown(rows_by_form: dict) -> list[str]:
    """The faster-whisper table: each CTranslate2 form called as users call it, beside the kit's hypotheses."""
    rows = [{"form": form, "call": r["variant"], "set": name, "n": s["n"], "identical": f"{s['identical']}/{s['n']}",
             "wer": f"{s['wer'] * 100:.2f}", "delta": f"{s['wer_delta_pts']:+.2f}", "sdi": f"{s['sub']}/{s['del']}/{s['ins']}",
             "utt_per_cpu_s": s["utt_per_cpu_s"]}
            for form, variants in rows_by_form.items() for r in variants for name, s in r["sets"].items()]
    if not rows:
        return []
    return ["## faster-whisper as users call it (`WhisperModel.transcribe` on the kit's normalized samples)", "",
            markdown_table(rows, FW_COLUMNS), ""]


def faster_whisper_causes(src: Source, forms: dict[str, Path], sample: int = 100) -> dict[str, list[dict]]:
    """`faster_whisper_parity.cause_variants` (one setting swapped at a time) on each CTranslate2 form, on the
    parity sample, against the unmerged adapter's hypotheses; written to export/faster_whisper_causes.{json,md}."""
    folders = {name: path for name, path in forms.items() if ct2.is_ct2_form(name)}
    if not folders:
        raise ValueError("no CTranslate2 export made from this adapter: export it first (--to ct2)")
    dev = pick_device("cpu")
    sets = parity_sample(src, sample)
    sm = load_source(src, dev)
    kit = {name: decode_utterances(sm, utts, src.rms_target, src.max_new_tokens, src.batch_size, dev, progress=False)[0]
           for name, utts in sets.items()}
    del sm
    rows = {name: faster_whisper_rows(src, path, sets, kit, torch.get_num_threads(), cause_variants(export_settings(path)))
            for name, path in folders.items()}
    out = next(iter(folders.values())).parent
    write_json(out / "faster_whisper_causes.json", {"run": src.run_folder.name if src.run_folder else None, "sample": sample,
                                                    "cpu": cpu_name(), "threads": torch.get_num_threads(), "created": now(), "rows": rows})
    atomic_write_text(out / "faster_whisper_causes.md", causes_markdown(rows, f"faster-whisper against the kit, {sample} clips per set"))
    return rows
