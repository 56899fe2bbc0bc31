"""The shipped forms of one run's adapter (`bench.py --deploy RUN`), each on the same seeded clips of the
run's domain set, the same CPU threads (`--threads`), batches, prompt and greedy settings, with the WER
beside each. Sections (deploy-export first, untimed: makes the forms the run lacks):

  deploy-unmerged     the adapter injected in PyTorch (peft), as the run evaluated it: the reference
  deploy-merged       the merged transformers model (`export/merged`)
  deploy-ct2-float32  CTranslate2, float32 weights (`export/ct2-float32`)
  deploy-ct2-int8     CTranslate2, int8 weights (`export/ct2-int8`)
  deploy-fw-transcribe  faster-whisper `WhisperModel.transcribe` on export/ct2-int8, the export README's
                      call (one call a clip, the clip zero-padded to 30 s)
  deploy-fw-batched   faster-whisper `BatchedInferencePipeline` on the same folder and call: the padded
                      clips end to end in one array, each clip one `clip_timestamps` window, batch_size
                      `--eval-batch-size` (how a user batches many short files through it)

Ratios per form: deploy_<form>_vs_unmerged (wall), _cpu_vs_unmerged (per CPU-second), _model_vs_unmerged
and _model_cpu_vs_unmerged (generation alone; the kit's forms only), _wer_delta_pts. faster-whisper's
rows are end to end from the normalized samples (its own log-mels inside), audio reading included.
"""

from __future__ import annotations

import time

DEPLOY_FORMS = ["unmerged", "merged", "ct2-float32", "ct2-int8"]
FW_FORMS = ["fw-transcribe", "fw-batched"]  # faster-whisper's two entry points, on export/ct2-int8


def worker_deploy_export(args) -> dict:
    """Untimed: export the forms the deploy sections measure, where the run has none from this adapter."""
    from lorakit.deploy.export import exported_forms, export_ct2, export_merged
    from lorakit.deploy.transcribe import resolve_source

    src = resolve_source(None, args.deploy)
    have, _ = exported_forms(src)
    made = []
    for form in DEPLOY_FORMS[1:]:
        if form not in have:
            export_merged(src) if form == "merged" else export_ct2(src, form.split("-", 1)[1])
            made.append(form)
    return {"exported": made, "found": sorted(have)}


def _source_and_clips(args):
    """The run's source and the seeded domain clips (`--eval-n`) every deploy section decodes."""
    from lorakit.deploy.parity import parity_sample
    from lorakit.deploy.transcribe import resolve_source

    src = resolve_source(None, args.deploy)
    return src, parity_sample(src, args.eval_n)["domain"]


def _export_folder(args, src, form: str):
    """export/<form> made from this run's adapter; a one-line exit when there is none."""
    from lorakit.deploy.export import exported_forms

    forms, stale = exported_forms(src)
    if form not in forms:
        raise SystemExit(f"{args.deploy}: no export/{form} from this adapter ({stale.get(form, 'not exported')})")
    return forms[form]


def _timed(form: str, src, utts, hyps: list[str], seconds: float, cpu_seconds: float) -> dict:
    """What every deploy section reports: clips, wall and CPU time with their rates, WER with S/D/I, the hypotheses.
    CPU seconds (all threads of this process, CTranslate2's included) barely move when other programs share the
    cores; wall-clock utt/s does: both are reported."""
    from lorakit.experiment.evaluate import score

    summary = score(utts, hyps, src.text_language).summary()  # normalized for the run's language, as its parity report is
    return {"form": form, "n": len(utts), "seconds": seconds, "utt_per_s": len(utts) / seconds, "cpu_seconds": cpu_seconds,
            "utt_per_cpu_s": len(utts) / cpu_seconds, "wer": summary["wer"], **{k: summary[k] for k in ("sub", "del", "ins", "ref_words")},
            "hyps": hyps}


def _deploy_worker(args, form: str) -> dict:
    """One form decodes the run's seeded domain clips through `decode_utterances` (the kit's audio,
    features, length-sorted batches, greedy), on `--threads` CPU threads; one untimed clip first."""
    import torch

    from lorakit.deploy.parity import load_form
    from lorakit.deploy.transcribe import decode_utterances, load_source

    torch.set_num_threads(args.threads)
    src, utts = _source_and_clips(args)
    device = torch.device("cpu")
    sm = load_source(src, device) if form == "unmerged" else load_form(form, _export_folder(args, src, form), device, src)
    decode_utterances(sm, utts[:1], src.rms_target, src.max_new_tokens, 1, device, None, progress=False)
    start, cpu_start = time.perf_counter(), time.process_time()
    hyps, _ = decode_utterances(sm, utts, src.rms_target, src.max_new_tokens, args.eval_batch_size, device, None, progress=False)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model_seconds, model_cpu_seconds = _time_generate(sm, utts, src, args.eval_batch_size)
    return {**_timed(form, src, utts, hyps, seconds, cpu_seconds), "model_seconds": model_seconds,
            "model_utt_per_s": len(utts) / model_seconds, "model_utt_per_cpu_s": len(utts) / model_cpu_seconds,
            "threads": torch.get_num_threads(), "compute_type": getattr(sm.model, "compute_type", "float32 (PyTorch)")}


def _time_generate(sm, utts, src, batch_size: int) -> tuple[float, float]:
    """The model alone: the same batches' features computed first (untimed), then only generation timed
    (wall and CPU seconds). End to end, every form shares the kit's audio loading and Python feature
    extraction, a fixed cost that hides how much faster the engine itself is."""
    from lorakit.experiment.audio import load_audio
    from lorakit.experiment.batches import eval_batches

    feats = [sm.features([load_audio(u.audio_filepath, sampling_rate=sm.sampling_rate, rms_target=src.rms_target) for u in b])
             for b in eval_batches(utts, batch_size)]
    start, cpu_start = time.perf_counter(), time.process_time()
    for f in feats:
        sm.generate(f, src.max_new_tokens)
    return time.perf_counter() - start, time.process_time() - cpu_start


def _fw_worker(args, form: str) -> dict:
    """faster-whisper on export/ct2-int8 with the export README's settings, over the same seeded clips and
    threads as the kit's forms; one untimed clip first; end to end from reading the audio."""
    from lorakit.deploy.faster_whisper_parity import Variant, export_settings, fw_decode, load_faster_whisper, readme_settings
    from lorakit.experiment.audio import load_audio

    src, utts = _source_and_clips(args)
    folder = _export_folder(args, src, "ct2-int8")
    model = load_faster_whisper(folder, args.threads)
    readme = Variant("readme", readme_settings(export_settings(folder)))
    batch_size = args.eval_batch_size if form == "fw-batched" else 1

    def decode(audio):
        return fw_batched(model, audio, readme.kwargs, batch_size) if form == "fw-batched" else fw_decode(model, audio, readme)

    decode([load_audio(utts[0].audio_filepath, rms_target=src.rms_target)])
    start, cpu_start = time.perf_counter(), time.process_time()
    hyps = decode([load_audio(u.audio_filepath, rms_target=src.rms_target) for u in utts])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {**_timed(form, src, utts, hyps, seconds, cpu_seconds), "threads": args.threads, "compute_type": model.model.compute_type,
            "batch_size": batch_size}


def fw_batched(model, audio: list, kwargs: dict, batch_size: int) -> list[str]:
    """`BatchedInferencePipeline` over many clips: each zero-padded to 30 s, laid end to end, one
    `clip_timestamps` window each (in seconds), decoded `batch_size` windows at a time; each segment goes
    back to the clip its start falls in."""
    import numpy as np
    from faster_whisper import BatchedInferencePipeline

    from lorakit.deploy.faster_whisper_parity import pad_to_window
    from lorakit.experiment.audio import SAMPLE_RATE

    padded = [pad_to_window(x) for x in audio]
    edges = np.cumsum([0] + [len(x) for x in padded]) / SAMPLE_RATE
    windows = [{"start": float(a), "end": float(b)} for a, b in zip(edges[:-1], edges[1:])]
    segments, _ = BatchedInferencePipeline(model).transcribe(np.concatenate(padded), clip_timestamps=windows, batch_size=batch_size,
                                                             **kwargs)
    texts: list[list[str]] = [[] for _ in audio]
    for seg in segments:
        texts[int(np.searchsorted(edges, seg.start + 1e-3, side="right")) - 1].append(seg.text.strip())
    return [" ".join(t).strip() for t in texts]


def worker_deploy_fw_transcribe(args) -> dict:
    return _fw_worker(args, "fw-transcribe")


def worker_deploy_fw_batched(args) -> dict:
    return _fw_worker(args, "fw-batched")


def worker_deploy_unmerged(args) -> dict:
    return _deploy_worker(args, "unmerged")


def worker_deploy_merged(args) -> dict:
    return _deploy_worker(args, "merged")


def worker_deploy_ct2_float32(args) -> dict:
    return _deploy_worker(args, "ct2-float32")


def worker_deploy_ct2_int8(args) -> dict:
    return _deploy_worker(args, "ct2-int8")


def deploy_rows(r: dict, rows: list, ratios: dict) -> None:
    """The deploy rows of the summary table and their ratios (needs deploy-unmerged)."""
    ref = r["deploy-unmerged"]
    for form in DEPLOY_FORMS:
        if f"deploy-{form}" not in r:
            continue
        f = r[f"deploy-{form}"]
        same = _end_to_end_ratios(form, f, ref, ratios)
        ratios[f"deploy_{form}_model_vs_unmerged"] = f["model_utt_per_s"] / ref["model_utt_per_s"]
        ratios[f"deploy_{form}_model_cpu_vs_unmerged"] = f["model_utt_per_cpu_s"] / ref["model_utt_per_cpu_s"]
        target = ">= 3x at WER within 0.5 pt" if form == "ct2-int8" else ""
        rows.append((f"deploy: {form} ({f['compute_type']}, {f['threads']} threads) (utt/s; utt per CPU-s)",
                     f"{f['utt_per_s']:.2f}  ({ratios[f'deploy_{form}_vs_unmerged']:.2f}x unmerged; per CPU-s {f['utt_per_cpu_s']:.2f} = "
                     f"{ratios[f'deploy_{form}_cpu_vs_unmerged']:.2f}x; model alone {f['model_utt_per_s']:.2f} utt/s = "
                     f"{ratios[f'deploy_{form}_model_vs_unmerged']:.2f}x, per CPU-s {ratios[f'deploy_{form}_model_cpu_vs_unmerged']:.2f}x; "
                     f"WER {100 * f['wer']:.2f} "
                     f"({ratios[f'deploy_{form}_wer_delta_pts']:+.2f} pt), S/D/I {f['sub']}/{f['del']}/{f['ins']}; "
                     f"{same}/{f['n']} hyps identical)", target))
    for form in FW_FORMS:
        if f"deploy-{form}" in r:
            rows.append(fw_row(form, r[f"deploy-{form}"], ref, ratios))


def _end_to_end_ratios(form: str, f: dict, ref: dict, ratios: dict) -> int:
    """A section's wall, per-CPU-second and WER ratios to the unmerged adapter (into `ratios`); its identical hypotheses."""
    ratios[f"deploy_{form}_vs_unmerged"] = f["utt_per_s"] / ref["utt_per_s"]
    ratios[f"deploy_{form}_cpu_vs_unmerged"] = f["utt_per_cpu_s"] / ref["utt_per_cpu_s"]
    ratios[f"deploy_{form}_wer_delta_pts"] = (f["wer"] - ref["wer"]) * 100
    return sum(a == b for a, b in zip(f["hyps"], ref["hyps"]))


def fw_row(form: str, f: dict, ref: dict, ratios: dict) -> tuple[str, str, str]:
    """A faster-whisper row of the summary table and its ratios to the unmerged adapter."""
    same = _end_to_end_ratios(form, f, ref, ratios)
    return (f"deploy: faster-whisper {form[3:]} (ct2-int8 {f['compute_type']}, {f['threads']} threads, batch {f['batch_size']}) "
            "(utt/s; utt per CPU-s)",
            f"{f['utt_per_s']:.2f}  ({ratios[f'deploy_{form}_vs_unmerged']:.2f}x unmerged; per CPU-s {f['utt_per_cpu_s']:.2f} = "
            f"{ratios[f'deploy_{form}_cpu_vs_unmerged']:.2f}x; WER {100 * f['wer']:.2f} ({ratios[f'deploy_{form}_wer_delta_pts']:+.2f} pt), "
            f"S/D/I {f['sub']}/{f['del']}/{f['ins']}; {same}/{f['n']} hyps identical to the unmerged adapter)", "")


# deploy-export first: every timed form is on disk before the first clock starts
WORKERS = {"deploy-export": worker_deploy_export, "deploy-unmerged": worker_deploy_unmerged, "deploy-merged": worker_deploy_merged,
           "deploy-ct2-float32": worker_deploy_ct2_float32, "deploy-ct2-int8": worker_deploy_ct2_int8,
           "deploy-fw-transcribe": worker_deploy_fw_transcribe, "deploy-fw-batched": worker_deploy_fw_batched}
