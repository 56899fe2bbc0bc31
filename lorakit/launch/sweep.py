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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig
from ..params import ID_CHARS, check_inputs_exist, load_launch_file
from ..display import format_lr
from ..record import SPLIT_KEYS, read_metrics, run_status
from ..display import markdown_table
from .notebooks import execute_analysis
from .pool import SweepRun, run_parallel, run_ray, run_sequential

SWEEP_KEYS = {"name", "base", "fixed", "grid", "runs", "description"}


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
        text = f"{value:.6g}" if value == 0 or 1e-3 <= abs(value) < 1e4 else format_lr(value, exponent_digits=2)
    else:
        text = str(value)
    return key + "".join(c if c in ID_CHARS else "_" for c in text)


def _as_list(key: str, values: Any, where: str) -> list:
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: grid[{key!r}] must be a non-empty list of values, got {values!r}")
    return values


def _cli_value(value: Any) -> str:
    """A value as `lorakit run -p` reads it back (`parse_value`: Python literals, else text)."""
    return value if isinstance(value, str) else repr(value)


def reproduce_command(base: str, values: dict[str, Any], run_id: str) -> list[str]:
    """The `lorakit run <base> -p key value ... -p run_id <id>` that executes these values on top of `base`."""
    command = ["lorakit", "run", base or "params/default.yaml"]
    for k, v in values.items():
        command += ["-p", k, _cli_value(v)]
    return command + ["-p", "run_id", run_id]


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file; every run's configuration is validated before anything runs."""
    spec, name, base, base_values = load_launch_file(path, SWEEP_KEYS, "sweep")
    where = str(path)
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
        command = reproduce_command(base, {k: params[k] for k in {**fixed, **typed} if k != "run_id"}, run_id)
        sweep.runs.append(SweepRun(run_id=run_id, variation=typed, params=params, command=command))
    return sweep


# --- execution -----------------------------------------------------------------------------------
def run_sweep(path: str | Path, jobs: int = 1, ray_address: str | None = None, force: bool = False,
              analysis: bool = True) -> int:
    """Expand and execute a sweep, then run the analysis notebook over its runs.

    Sequential by default (each run through `notebooks.execute`, as `lorakit run` does); `jobs` > 1 runs
    that many `lorakit run` processes at once on this machine, each with cores // jobs threads;
    `ray_address` ("auto", "local" or host:port) makes each run a Ray task that requests one GPU
    when the cluster has GPUs. Finished runs are skipped unless `force`. Returns 0 when every run
    finished (or was already finished) and the analysis ran, else 1.
    """
    if jobs < 1 or (ray_address and jobs != 1):  # the CLI's argparse says so too; callers of the function get it here
        raise ConfigError(f"--jobs {jobs}" + (f" and --ray {ray_address}: choose one" if jobs >= 1 else ": an integer >= 1"))
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
        statuses = run_ray(todo, ray_address, force, desc=f"sweep {sweep.name}")
    elif jobs > 1:
        statuses = run_parallel(todo, jobs, force, out_dir, desc=f"sweep {sweep.name}")
    else:
        statuses = run_sequential(todo, force, desc=f"sweep {sweep.name}")
    final = {r.run_id: statuses.get(r.run_id, "skipped (finished)") for r in sweep.runs}
    print(summary_table(sweep, final, out_dir))
    print(f"sweep {sweep.name}: {time.time() - started:.0f} s")

    ok = all(s in ("finished", "skipped", "skipped (finished)") for s in final.values())
    if analysis:
        ok = run_analysis(sweep, out_dir) and ok
    return 0 if ok else 1


def summary_table(sweep: Sweep, statuses: dict[str, str], out_dir: Path) -> str:
    """Markdown table: run id, what it varies, status, and its WERs when finished."""
    rows = []
    for r in sweep.runs:
        m = read_metrics(out_dir / r.run_id) or {}
        rows.append({"run": r.run_id, "varies": ", ".join(f"{k}={v}" for k, v in r.variation.items()),
                     "status": statuses[r.run_id],
                     **{split: _wer_pair(m.get(base), m.get(tuned)) for split, (base, tuned) in SPLIT_KEYS.items()}})
    return markdown_table(rows, [("run", "run"), ("varies", "varies"), ("status", "status"),
                                 ("domain", "domain WER"), ("heldout", "heldout WER")])


def _wer_pair(base: float | None, tuned: float | None) -> str:
    return "" if base is None or tuned is None else f"{base:.4f} → {tuned:.4f}"


def run_analysis(sweep: Sweep, out_dir: Path) -> bool:
    """notebooks/analysis.ipynb over this sweep's runs, into <output_dir>/analysis-<name>.ipynb, with its
    figures in <output_dir>/figures-<name>/."""
    ids = [r.run_id for r in sweep.runs if (out_dir / r.run_id).is_dir()]
    if not ids:
        print(f"sweep {sweep.name}: no run records to analyse")
        return False
    return execute_analysis(out_dir / f"analysis-{sweep.name}.ipynb",
                            {"runs_dir": str(out_dir), "run_ids": ",".join(ids), "figures_dir": str(out_dir / f"figures-{sweep.name}")})
