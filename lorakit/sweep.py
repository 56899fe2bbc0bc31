"""Sweeps: a grid or a list of variations of one recipe, expanded into runs with readable ids,
executed one after another, in parallel on this machine, or as Ray tasks, then analysed.

A sweep file (params/sweeps/<name>.yaml; see params/sweeps/README.md):

    name: lr_dora              # run-id prefix (default: the file's stem)
    base: params/demo.yaml     # optional recipe the sweep varies (default: params/default.yaml alone)
    fixed: {max_steps: 100}    # optional values every run gets, on top of the base
    grid:                      # every combination; the last key varies fastest
      lr: [5.0e-5, 1.0e-4]
      use_dora: [false, true]
      seed: [1, 2, 3]
    runs:                      # and/or an explicit list of variations
      - {lr: 5.0e-5}
      - {lr: 1.0e-4, use_dora: true}

Each run is params/default.yaml + base + fixed + its variation, exactly what
`lorakit run <base> -p key value ... -p run_id <id>` executes (that command is recorded in the run).
Run ids are the name, then one part per varied key: `lr_dora-lr5e-05-dora-s1` (lr, LoRA/DoRA, seed;
`r8` for lora_r, `<key><value>` otherwise). Every grid key is named even when it holds one value, so
adding values later keeps the ids of the runs already done. Finished runs are skipped (unless
`force`), so an interrupted sweep resumes where it stopped, and an interrupted run resumes from its
`checkpoint_last`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .config import ConfigError, RunConfig, check_inputs_exist, load_yaml, project_root
from .runs import _delta, verdict

SWEEP_KEYS = {"name", "base", "fixed", "grid", "runs", "description"}
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class SweepRun:
    run_id: str
    variation: dict[str, Any]  # the values this run changes (validated, typed)
    params: dict[str, Any]  # base + fixed + variation: the notebook's parameters (without run_id)
    command: list[str]  # the `lorakit run ...` that reproduces it


@dataclass
class Sweep:
    name: str
    path: Path
    base: str  # recipe path as written ("" when none)
    runs: list[SweepRun] = field(default_factory=list)

    def output_dir(self) -> Path:
        """Where the runs' records go (every run of a sweep shares its output_dir)."""
        dirs = {RunConfig.from_dict(r.params).path("output_dir") for r in self.runs}
        if len(dirs) != 1:
            raise ConfigError(f"{self.path}: the runs of one sweep must share output_dir, got {sorted(map(str, dirs))}")
        return dirs.pop()


# --- expansion -----------------------------------------------------------------------------------
def format_value(key: str, value: Any) -> str:
    """One run-id part: lr5e-05, dora/lora, s1, r8, else <key><value> with unsafe characters as '_'."""
    if key == "use_dora":
        return "dora" if value else "lora"
    if key == "seed":
        return f"s{value}"
    if key == "lora_r":
        return f"r{value}"
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.6g}" if value == 0 or 1e-3 <= abs(value) < 1e4 else _exp(value)
    else:
        text = str(value)
    return key + "".join(c if c in _ID_CHARS else "_" for c in text)


def _exp(value: float) -> str:
    """5e-05, 1e-04, 2.5e-04: Python's exponent style, always in exponent form."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


def _as_list(key: str, values: Any, where: str) -> list:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: grid[{key!r}] must be a non-empty list of values, got {values!r}")
    return values


def _cli_value(value: Any) -> str:
    """A value as `lorakit run -p` reads it back (cli.parse_value: Python literals, else text)."""
    return value if isinstance(value, str) else repr(value)


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file; every run's configuration is validated before anything runs."""
    spec = load_yaml(path)
    where = str(path)
    unknown = sorted(set(spec) - SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown sweep key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(SWEEP_KEYS))}")
    name = str(spec.get("name") or Path(path).stem)
    if not name or any(c not in _ID_CHARS for c in name):
        raise ConfigError(f"{where}: name {name!r}: letters, digits, '-', '_' and '.' only (it prefixes run ids)")
    base = str(spec.get("base") or "")
    base_values = load_yaml(base) if base else {}
    fixed = spec.get("fixed") or {}
    grid = spec.get("grid") or {}
    listed = spec.get("runs") or []
    if not isinstance(fixed, dict) or not isinstance(grid, dict) or not isinstance(listed, list):
        raise ConfigError(f"{where}: 'fixed' and 'grid' are mappings, 'runs' is a list of mappings")
    if not grid and not listed:
        raise ConfigError(f"{where}: a sweep needs a 'grid' or a 'runs' list")

    variations: list[tuple[dict, list[str]]] = []  # (values, keys named in the id)
    if grid:
        keys = list(grid)
        for combo in itertools.product(*(_as_list(k, grid[k], where) for k in keys)):
            variations.append((dict(zip(keys, combo)), keys))
    for i, item in enumerate(listed):
        if not isinstance(item, dict) or not item:
            raise ConfigError(f"{where}: runs[{i}] must be a non-empty mapping of parameter: value")
        variations.append((dict(item), [k for k in item if k != "run_id"]))

    sweep = Sweep(name=name, path=Path(path), base=base)
    seen: dict[str, dict] = {}
    for values, id_keys in variations:
        merged = {**base_values, **fixed, **values}
        merged.pop("run_id", None)
        cfg = RunConfig.from_dict({**merged, "run_id": values.get("run_id", "")}, source=f"{where} ({values})")
        params = {k: getattr(cfg, k) for k in merged}  # typed as the run sees them: "5e-5" from YAML -> 5e-05
        typed = {k: getattr(cfg, k) for k in values if k != "run_id"}
        run_id = cfg.run_id or "-".join([name, *(format_value(k, typed[k]) for k in id_keys)])
        if run_id in seen:
            raise ConfigError(f"{where}: two runs would share the id {run_id!r}: {seen[run_id]} and {values}")
        seen[run_id] = values
        RunConfig.from_dict({**params, "run_id": run_id}, source=where)  # the id itself is valid
        command = ["lorakit", "run", base or "params/default.yaml"]
        for k in {**fixed, **typed}:
            if k != "run_id":
                command += ["-p", k, _cli_value(params[k])]
        command += ["-p", "run_id", run_id]
        sweep.runs.append(SweepRun(run_id=run_id, variation=typed, params=params, command=command))
    return sweep


# --- execution -----------------------------------------------------------------------------------
def run_sweep(path: str | Path, jobs: int = 1, ray_address: str | None = None, force: bool = False,
              analysis: bool = True) -> int:
    """Expand and execute a sweep, then run the analysis notebook over its runs.

    Sequential by default (each run through `cli.execute`, as `lorakit run` does); `jobs` > 1 runs
    that many `lorakit run` processes at once on this machine, each with cores // jobs threads;
    `ray_address` ("auto", "local" or host:port) makes each run a Ray task that requests one GPU
    when the cluster has GPUs. Finished runs are skipped unless `force`. Returns 0 when every run
    finished (or was already finished) and the analysis ran, else 1.
    """
    from .cli import run_status

    sweep = load_sweep(path)
    out_dir = sweep.output_dir()
    for r in sweep.runs:
        check_inputs_exist(RunConfig.from_dict(r.params))  # a missing manifest fails now, not n runs later
    todo = [r for r in sweep.runs if force or run_status(out_dir / r.run_id) != "finished"]
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - len(todo)} already finished, "
          f"{len(todo)} to run" + (f" on Ray ({ray_address})" if ray_address else f" with {jobs} job(s)" if jobs > 1 else ""))
    started = time.time()
    if not todo:
        statuses = {}
    elif ray_address:
        statuses = _run_ray(todo, ray_address, force)
    elif jobs > 1:
        statuses = _run_parallel(todo, jobs, force, out_dir)
    else:
        statuses = _run_sequential(todo, force)
    final = {r.run_id: statuses.get(r.run_id, "skipped (finished)") for r in sweep.runs}
    print(summary_table(sweep, final, out_dir))
    print(f"sweep {sweep.name}: {time.time() - started:.0f} s")

    ok = all(s in ("finished", "skipped", "skipped (finished)") for s in final.values())
    if analysis:
        ok = run_analysis(sweep, out_dir) and ok
    return 0 if ok else 1


def _run_sequential(todo: Sequence[SweepRun], force: bool) -> dict[str, str]:
    from .cli import execute

    return {r.run_id: execute(r.params, r.run_id, force=force, command=shlex.join(r.command)) for r in todo}


def _subprocess_command(run: SweepRun, force: bool) -> list[str]:
    return [sys.executable, "-m", "lorakit.cli", *run.command[1:], "--quiet", *(["--force"] if force else [])]


def _thread_env(threads: int) -> dict[str, str]:
    """Environment of one run's process: `threads` CPU threads, so parallel runs do not thrash the cores."""
    n = str(max(1, threads))
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def _visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _run_parallel(todo: Sequence[SweepRun], jobs: int, force: bool, out_dir: Path) -> dict[str, str]:
    """`jobs` runs at a time, each a `lorakit run` process; with GPUs, job slot i gets GPU i mod #GPUs
    (CUDA_VISIBLE_DEVICES). Logs go to <output_dir>/.sweep-logs/<id>.log."""
    import queue

    from .cli import run_status

    env = _thread_env((os.cpu_count() or 1) // jobs)
    gpus = _visible_gpus()
    slots: queue.Queue = queue.Queue()
    for i in range(jobs):
        slots.put(gpus[i % len(gpus)] if gpus else None)
    logs = out_dir / ".sweep-logs"
    logs.mkdir(parents=True, exist_ok=True)

    def one(run: SweepRun) -> tuple[str, str]:
        log = logs / f"{run.run_id}.log"
        gpu = slots.get()
        try:
            with open(log, "w") as fh:
                proc = subprocess.run(_subprocess_command(run, force), cwd=project_root(), stdout=fh, stderr=subprocess.STDOUT,
                                      env={**env, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})})
        finally:
            slots.put(gpu)
        status = run_status(out_dir / run.run_id) or "unknown"
        if proc.returncode != 0 and status == "finished":
            status = f"exit {proc.returncode}"
        print(f"{run.run_id}: {status}" + ("" if status == "finished" else f" (log: {log})"), flush=True)
        return run.run_id, status

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(pool.map(one, todo))


def _ray_task(command: list[str], root: str, env: dict[str, str], folder: str) -> tuple[str, int, str]:
    """One run inside a Ray worker: `lorakit run` as a child process (its own kernel, the GPU Ray gave
    this task via CUDA_VISIBLE_DEVICES); returns (status, exit code, last lines of output)."""
    import subprocess as sp

    from lorakit.cli import run_status

    proc = sp.run(command, cwd=root, env={**os.environ, **env}, capture_output=True, text=True)
    return run_status(Path(folder)) or "unknown", proc.returncode, (proc.stdout + proc.stderr)[-2000:]


def _run_ray(todo: Sequence[SweepRun], address: str, force: bool) -> dict[str, str]:
    """Each run a Ray task; the project folder must be at the same path on every node (shared storage)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'lorakit[ray]' (or \"ray[default]\")") from None
    if not ray.is_initialized():
        local = {"include_dashboard": False} if address == "local" else {}  # "local": a fresh instance on this machine
        ray.init(address=address, log_to_driver=False, **local)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_ray_task)
    root = str(project_root())
    env = {"LORAKIT_ROOT": root, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("LORAKIT_")})
    refs = {task.remote(_subprocess_command(r, force), root, env, str(RunConfig.from_dict(r.params).path("output_dir") / r.run_id)): r
            for r in todo}
    print(f"ray: {len(refs)} tasks, {gpus} GPU each, on {ray.cluster_resources().get('CPU', 0):.0f} CPUs / "
          f"{ray.cluster_resources().get('GPU', 0):.0f} GPUs")
    statuses = {}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        run = refs[done[0]]
        try:
            status, code, tail = ray.get(done[0])
        except Exception as exc:  # noqa: BLE001 - a lost worker or node is that run's failure, not the sweep's
            status, code, tail = "failed", -1, f"{type(exc).__name__}: {exc}"
        if code != 0 and status == "finished":
            status = f"exit {code}"
        statuses[run.run_id] = status
        print(f"{run.run_id}: {status}" + ("" if status == "finished" else f"\n{tail}"), flush=True)
    return statuses


def summary_table(sweep: Sweep, statuses: dict[str, str], out_dir: Path) -> str:
    """Markdown table: run id, what it varies, status, and its WERs when finished."""
    lines = ["| run | varies | status | domain WER | heldout WER |", "|---|---|---|---|---|"]
    for r in sweep.runs:
        m = _read(out_dir / r.run_id / "metrics.json")
        dom = _wer_pair(m.get("baseline_wer"), m.get("tuned_wer"))
        held = _wer_pair(m.get("heldout_baseline_wer"), m.get("heldout_tuned_wer"))
        varies = ", ".join(f"{k}={v}" for k, v in r.variation.items())
        lines.append(f"| {r.run_id} | {varies} | {statuses[r.run_id]} | {dom} | {held} |")
    return "\n".join(lines)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _wer_pair(base: float | None, tuned: float | None) -> str:
    return "" if base is None or tuned is None else f"{base:.4f} → {tuned:.4f}"


def run_analysis(sweep: Sweep, out_dir: Path) -> bool:
    """notebooks/analysis.ipynb over this sweep's runs, into <output_dir>/analysis-<name>.ipynb, with its
    figures in <output_dir>/figures-<name>/."""
    import papermill

    ids = [r.run_id for r in sweep.runs if (out_dir / r.run_id).is_dir()]
    if not ids:
        print(f"sweep {sweep.name}: no run records to analyse")
        return False
    root = project_root()
    out = out_dir / f"analysis-{sweep.name}.ipynb"
    try:
        papermill.execute_notebook(str(root / "notebooks" / "analysis.ipynb"), str(out), cwd=str(root / "notebooks"),
                                   parameters={"runs_dir": str(out_dir), "run_ids": ",".join(ids),
                                               "figures_dir": str(out_dir / f"figures-{sweep.name}")},
                                   progress_bar=False)
    except papermill.PapermillExecutionError as exc:
        print(f"sweep {sweep.name}: analysis failed: {exc.ename}: {exc.evalue} (notebook: {out})", file=sys.stderr)
        return False
    print(f"analysis: {out}")
    return True


# --- seeds ---------------------------------------------------------------------------------------
NOT_CONFIG = ("seed", "run_id", "notes", "output_dir")  # what seed replicates may differ in
WER_KEYS = ("baseline_wer", "tuned_wer", "heldout_baseline_wer", "heldout_tuned_wer")


def _config_of(row: dict) -> dict:
    """The run's configuration: row["config"] (config.json's), or the JSON `config_key` of a run-matrix row."""
    if isinstance(row.get("config"), dict):
        return row["config"]
    if row.get("config_key"):
        return json.loads(row["config_key"])
    raise ValueError(f"row {row.get('run_id')!r} has neither 'config' nor 'config_key'")


def seed_verdict(row: dict, min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float = 0.2) -> str:
    """The protocol's acceptance for one run, on its point estimates (`runs.verdict` without the CI):
    domain WER down by at least `min_domain_gain_pts`, heldout WER up by at most `max_heldout_regression_pts`."""
    deltas = {f"{split}_delta_pts": _delta(row.get(base), row.get(tuned)) for split, base, tuned in
              (("domain", "baseline_wer", "tuned_wer"), ("heldout", "heldout_baseline_wer", "heldout_tuned_wer"))}
    return verdict({"status": "finished", **deltas}, min_domain_gain_pts, max_heldout_regression_pts, require_ci=False)


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate_seeds(rows: Sequence[dict], min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float = 0.2,
                    min_seeds: int = 2) -> list[dict]:
    """Seed replicates aggregated: finished runs whose configuration is identical except seed, run_id,
    notes and output_dir form a group; each group gets mean and sd (sample, n-1) of each WER and of
    the domain/heldout deltas in points, every seed's verdict, and an overall verdict: accept when
    every seed accepts, reject when any rejects, inconclusive otherwise.

    `rows` are dicts with run_id, seed, status (only "finished" counts; missing means finished), the
    four WERs (fractions) and the configuration as `config` (config.json's) or `config_key` (JSON, as
    in `runs.run_matrix(...).rows`). Groups with fewer than `min_seeds` runs are left out.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("status", "finished") != "finished":
            continue
        config = {k: v for k, v in _config_of(row).items() if k not in NOT_CONFIG}
        groups.setdefault(json.dumps(config, sort_keys=True, default=str), []).append(row)
    out = []
    for key, members in groups.items():
        if len(members) < min_seeds:
            continue
        members = sorted(members, key=lambda r: (str(r.get("seed")), r.get("run_id", "")))
        agg: dict[str, Any] = {"config": json.loads(key), "runs": [r.get("run_id") for r in members],
                               "seeds": [r.get("seed", _config_of(r).get("seed")) for r in members], "n": len(members)}
        for k in WER_KEYS:
            agg[f"{k}_mean"], agg[f"{k}_sd"] = _mean_sd([r[k] for r in members if r.get(k) is not None])
        for split, b, t in (("domain", "baseline_wer", "tuned_wer"), ("heldout", "heldout_baseline_wer", "heldout_tuned_wer")):
            deltas = [(r[t] - r[b]) * 100 for r in members if r.get(b) is not None and r.get(t) is not None]
            agg[f"{split}_delta_pts_mean"], agg[f"{split}_delta_pts_sd"] = _mean_sd(deltas)
        verdicts = [seed_verdict(r, min_domain_gain_pts, max_heldout_regression_pts) for r in members]
        agg["verdicts"] = dict(zip(map(str, agg["seeds"]), verdicts))
        accepted = sum(v == "accept" for v in verdicts)
        rejected = sum(v.startswith("reject") for v in verdicts)
        if accepted == len(verdicts):
            agg["verdict"] = "accept"
        elif rejected:
            agg["verdict"] = f"reject ({rejected} of {len(verdicts)} seeds rejected)"
        else:
            agg["verdict"] = f"inconclusive ({accepted} of {len(verdicts)} seeds accepted)"
        out.append(agg)
    return out


def _pm(mean: float | None, sd: float | None, digits: int, scale: float = 1.0) -> str:
    if mean is None:
        return ""
    return f"{mean * scale:.{digits}f}" + ("" if sd is None or math.isnan(sd) else f" ± {sd * scale:.{digits}f}")


def seeds_markdown(groups: Sequence[dict]) -> str:
    """`aggregate_seeds` output as a Markdown table (WERs as fractions, deltas in points, mean ± sd)."""
    if not groups:
        return "_No seed groups yet (finished runs that differ only in seed)._"
    head = ["runs", "seeds", "baseline WER", "tuned WER", "domain Δ pts", "heldout baseline WER", "heldout tuned WER",
            "heldout Δ pts", "verdict per seed", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        per_seed = "; ".join(f"s{s}: {v}" for s, v in g["verdicts"].items())
        cells = [", ".join(g["runs"]), ", ".join(map(str, g["seeds"])),
                 _pm(g["baseline_wer_mean"], g["baseline_wer_sd"], 4), _pm(g["tuned_wer_mean"], g["tuned_wer_sd"], 4),
                 _pm(g["domain_delta_pts_mean"], g["domain_delta_pts_sd"], 2),
                 _pm(g["heldout_baseline_wer_mean"], g["heldout_baseline_wer_sd"], 4),
                 _pm(g["heldout_tuned_wer_mean"], g["heldout_tuned_wer_sd"], 4),
                 _pm(g["heldout_delta_pts_mean"], g["heldout_delta_pts_sd"], 2), per_seed, g["verdict"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
