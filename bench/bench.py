"""lorakit against what a user would run instead, side by side on one machine, same model, data and settings.

    python bench/bench.py                 # the figures in bench/README.md (about 25 min on 2 CPU cores)
    python bench/bench.py --quick         # a minute or two: checks that every section still works (CI)
    python bench/bench.py --model openai/whisper-small --train my/train.jsonl --domain my/dev.jsonl --device cuda

Every measurement runs in a fresh subprocess (`--worker NAME`), so each has its own peak RSS, its own
warm-up and no cache left in memory by another. This file is the driver (arguments, subprocesses,
the summary table, the results file); each measurement reads on its own in its module:
bench_train.py, bench_eval.py, bench_baseline.py, bench_profile.py, bench_deploy.py, and the set-up
they share in bench_shared.py. Sections:

  train-hf        HF Seq2SeqTrainer + peft, log-mel features precomputed with `datasets.map` (as in the
                  transformers speech-recognition example), same model, LoRA config, clips, batch, steps, LR
  train-lorakit   lorakit's loop (train_step), decoder-only LoRA: encoder cache cold (first epoch computes
                  encoder outputs), then the same number of steps warm
  train-nocache   lorakit's loop with the encoder cache off: the same work per step as train-hf
  train-full      lorakit's loop with LoRA on encoder and decoder (the encoder trains: nothing to cache)
  train-distill   lorakit's loop with replay, warm encoder cache: seconds per step without self-distillation,
                  with it on the replay clips and on every clip (interleaved blocks, same batches)
  eval-batch1     generate() one clip at a time, features extracted per clip (the old team's runner)
  eval-lorakit    lorakit's evaluation (batched, length-sorted), encoder cache off, then frozen-encoder
                  cold and warm; hypotheses compared with eval-batch1
  baseline-cache  the shared baseline: first run (miss), second run (hit), and the keys of a changed
                  manifest, RMS target and generation limit (must miss)
  profile         torch.profiler over one training step (cache off, and frozen) and one eval batch

With `--deploy RUN` (a run id such as demo, or a run folder), the shipped forms of that run's adapter
instead (`lorakit export`, made first where missing), each on the same seeded clips of the run's domain
set, the same CPU threads (`--threads`), batches, prompt and greedy settings, with the WER beside each:

  deploy-unmerged     the adapter injected in PyTorch (peft), as the run evaluated it: the reference
  deploy-merged       the merged transformers model (`export/merged`)
  deploy-ct2-float32  CTranslate2, float32 weights (`export/ct2-float32`)
  deploy-ct2-int8     CTranslate2, int8 weights (`export/ct2-int8`)
  deploy-fw-transcribe, deploy-fw-batched   faster-whisper's WhisperModel.transcribe and
                      BatchedInferencePipeline on export/ct2-int8 with the export README's call

Results: a table on stdout and `bench/results/latest.json` (`--out` to change). A section that fails is
reported (its error and stderr in the JSON), the others still run, and the exit code is 1.

On a GPU (`--device cuda`; bench/gpu_check.sh runs it on the device machine): every timed section first
runs one untimed training step or evaluation batch (kernel loading and cuBLAS set-up cost more than the
steps measured), the clocks wait for the device (`torch.cuda.synchronize`), and each worker reports
torch's peak of allocated GPU memory (`peak_gpu_mb`) beside its peak RSS. Nothing changes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_baseline
import bench_deploy
import bench_eval
import bench_profile
import bench_shared
import bench_train

ROOT = bench_shared.ROOT
SECTIONS = {**bench_train.WORKERS, **bench_eval.WORKERS, **bench_baseline.WORKERS, **bench_profile.WORKERS}
WORKERS = list(SECTIONS)
DEPLOY_WORKERS = list(bench_deploy.WORKERS)


# --- driver -----------------------------------------------------------------------------------------
def run_worker(name: str, argv: list[str]) -> dict:
    """One section in its own process; a failing section is reported as {"error": ...}, and the others
    still run (on a machine lent for minutes, one broken section must not cost the rest)."""
    cmd = [sys.executable, __file__, "--worker", name, *argv]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lorakit-bench-") as tmp:  # the worker's caches (GBs), removed after
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TMPDIR": tmp})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        return {"error": f"bench worker {name} failed (exit {proc.returncode})", "stderr_tail": proc.stderr[-4000:],
                "wall_seconds": time.perf_counter() - start}
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_seconds"] = time.perf_counter() - start
    return result



def summarize(r: dict, args) -> tuple[list[tuple[str, str, str]], dict]:
    """(measurement, value, target) rows and the ratios, for whichever sections succeeded."""
    rows, ratios = [], {}
    ok = {name: res for name, res in r.items() if "error" not in res}
    if {"train-hf", "train-lorakit"} <= set(ok):
        bench_train.train_rows(ok, args, rows, ratios)
    if "train-distill" in ok:
        bench_train.distill_rows(ok["train-distill"], rows, ratios)
    if {"eval-batch1", "eval-lorakit"} <= set(ok):
        bench_eval.eval_rows(ok, rows, ratios)
    if "deploy-unmerged" in ok:
        bench_deploy.deploy_rows(ok, rows, ratios)
    if "baseline-cache" in ok:
        bench_baseline.baseline_rows(ok["baseline-cache"], rows)
    for name in ("train-hf", "train-lorakit", "train-nocache", "train-full", "train-distill", "eval-batch1", "eval-lorakit"):
        if name in ok:
            rows.append((f"peak RSS {name} (MB)", f"{ok[name]['peak_rss_mb']:.0f}", "<= 3000 (batch 8)" if name.startswith("train") else ""))
        if ok.get(name, {}).get("peak_gpu_mb") is not None:
            rows.append((f"peak GPU memory {name} (MB, torch allocated)", f"{ok[name]['peak_gpu_mb']:.0f}", ""))
    rows += [(f"FAILED: {name}", res["error"], "") for name, res in r.items() if "error" in res]
    return rows, ratios


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported(),
                    gpu_memory_mb=torch.cuda.get_device_properties(0).total_memory / 2**20)
    return info


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that every section works, figures mean nothing")
    p.add_argument("--model", default="bundled:whisper-tiny.en")
    p.add_argument("--train", default="data/demo/train.jsonl")
    p.add_argument("--domain", default="data/demo/domain.jsonl")
    p.add_argument("--replay", default="data/demo/replay.jsonl", help="replay clips (train-distill)")
    p.add_argument("--train-n", type=int, default=None, help="training clips (default 64; quick 8)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per measured pass (default 16; quick 2)")
    p.add_argument("--batch-size", type=int, default=None, help="default 8; quick 4")
    p.add_argument("--eval-n", type=int, default=None, help="domain clips evaluated (default 160; quick 6; 0 = all)")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=128, help="generation limit per clip (as the run parameter)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--deploy", default="", metavar="RUN", help="measure the shipped forms of this run (id or folder) instead")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for the deploy sections, every form alike")
    p.add_argument("--only", default="", help="comma-separated sections (default: all); the others are kept from --out")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, full, small in (("train_n", 64, 8), ("steps", 16, 2), ("batch_size", 8, 4), ("eval_n", 160, 6)):
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    if args.quick:
        args.eval_batch_size = min(args.eval_batch_size, 4)
    return args


def report(results: dict, args) -> dict:
    """The JSON report, with the summary table printed (for whichever sections are there)."""
    out = {"machine": machine(), "settings": {k: v for k, v in vars(args).items() if k != "worker"}, "results": results,
           "date": time.strftime("%Y-%m-%d %H:%M")}
    rows, out["ratios"] = summarize(results, args)
    if rows:
        width = max(len(r[0]) for r in rows)
        print("\n" + "\n".join(f"{a:<{width}}  {b}   {c}" for a, b, c in rows))
    if "error" not in results.get("profile", {"error": ""}):
        for label, table in results["profile"].items():
            if isinstance(table, list):
                print(f"\nprofile {label}:")
                for row in table[:8]:
                    print(f"  {row['share']:6.1%}  {row['ms']:9.1f} ms  {row['calls']:5d}x  {row['op']}  {row['shapes']}")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    if args.worker:
        result = {**SECTIONS, **bench_deploy.WORKERS}[args.worker](args)
        result["peak_rss_mb"] = bench_shared.peak_rss_mb()
        result["peak_gpu_mb"] = bench_shared.peak_gpu_mb()
        print("RESULT " + json.dumps(result))
        return 0

    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("quick", "only", "out", "worker")]
    sections = DEPLOY_WORKERS if args.deploy else WORKERS
    chosen = [w for w in sections if not args.only or w in args.only.split(",")]
    out = Path(args.out)
    results: dict = {}
    if (args.only or args.deploy) and out.exists():  # re-run some sections: keep the others from the last report
        results = json.loads(out.read_text()).get("results", {})
    for name in chosen:
        print(f"[bench] {name} ...", flush=True)
        results[name] = run_worker(name, forwarded)
        gpu = results[name].get("peak_gpu_mb")
        print(f"[bench] {name}: {results[name]['wall_seconds']:.0f} s wall, peak RSS {results[name].get('peak_rss_mb', 0):.0f} MB"
              + (f", peak GPU {gpu:.0f} MB" if gpu is not None else "") + (f", {results[name]['error']}" if "error" in results[name] else ""),
              flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report(results, args), indent=1))
    print(f"\n[bench] results written to {out}")
    return 1 if any("error" in results[name] for name in chosen) else 0


if __name__ == "__main__":
    sys.exit(main())
