"""`lorakit search`: an Optuna study over a space declared in YAML, on top of one recipe. Each trial is
an ordinary run (a papermill execution of notebooks/train.ipynb, its run record, a row of the matrix).

A search file (params/search/<name>.yaml; see params/search/README.md):

    name: demo                        # the study's name and run-id prefix (default: the file's stem)
    base: params/demo.yaml            # the recipe the search tunes
    fixed: {eval_interval: 10}        # values every trial gets, on top of the base
    trials: 12                        # finished trials the study ends with (--trials overrides)
    space:                            # one Optuna distribution per parameter
      lr: {float: [1.0e-4, 3.0e-3], log: true}
      lora_r: {categorical: [8, 16, 32]}
      max_steps: {int: [30, 90], step: 30}
    enqueue: [{lr: 1.0e-3, lora_r: 16, max_steps: 60}]   # trials to run first (e.g. the hand-picked recipe)
    pruner: {MedianPruner: {n_startup_trials: 2}}         # an optuna.pruners class and its arguments; {}: none
    sampler: {TPESampler: {seed: 0}}  # an optuna.samplers class and its arguments
    heartbeat_s: 60                   # a trial whose worker stays silent 2 x this long is failed and retried

Objective: the best checkpoint's domain WER (the dev set's when the record has a `dev` block), minimised.
Constraint (`Trial.set_constraint`, which Optuna 5 puts in place of the samplers' `constraints_func`):
heldout regression ≤ the run's guardrail, so the study's best trial is the best one that passes, and
TPE samples away from infeasible regions. Pruning: the run reports its domain WER at every evaluation and
stops (stop reason `pruned`) when the pruner says so (`experiment/trial.py`, inside the run).

The study lives in SQLite in the runs folder by default (`<output_dir>/search-<name>.db`) or in any
storage URL Optuna accepts; workers on several machines share one study through it (Optuna's own
distributed mode). With `--ray` the study stays in this process and each trial's run is a Ray task on
whichever node Ray picks; that run opens the storage to report its evaluations, so the URL must reach
the study from every node (SQLite on shared storage, or a database server). With an RDB storage every trial holds a heartbeat: rerunning an interrupted search
fails its dead trial and retries it with the same values under the same run id, so the run resumes
from its `checkpoint_last`; the study ends with `trials` finished (complete or pruned) trials.
"""

from __future__ import annotations

import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError, RunConfig
from ..params import check_inputs_exist, load_launch_file
from ..record import delta_pts, guardrail_excess, read_metrics
from .notebooks import execute, execute_analysis
from .pool import JobSlots, RaySlots, SweepRun, Tally, say
from .sweep import reproduce_command

SEARCH_KEYS = {"name", "base", "fixed", "space", "trials", "enqueue", "pruner", "sampler", "heartbeat_s", "description"}
DISTRIBUTIONS = {"float": {"log", "step"}, "int": {"log", "step"}, "categorical": set()}  # kind -> its options
SEARCH_ATTR = "lorakit_search"  # study user attribute: what the study searches (a rerun must search the same)
PRUNER_ATTR = "lorakit_pruner"  # study user attribute the trials build their pruner from (experiment/trial.py)
MAX_FAILURES = 3  # a worker stops after this many failed trials in a row (a broken recipe fails every trial)


class TrialFailed(Exception):
    """The trial's run did not finish (its record says why)."""


class SurplusTrial(Exception):
    """Two workers asked for the last trial at once; this one is not needed (recorded as failed)."""


@dataclass
class Search:
    name: str
    path: Path
    base: str  # recipe path as written ("" when none)
    base_values: dict[str, Any]
    fixed: dict[str, Any]
    space: dict[str, dict]
    trials: int = 10
    enqueue: list[dict] = field(default_factory=list)
    pruner: dict = field(default_factory=lambda: {"MedianPruner": {"n_startup_trials": 2}})
    sampler: dict = field(default_factory=lambda: {"TPESampler": {"seed": 0}})
    heartbeat_s: int = 60

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        """A trial's run parameters (without the search identity): base + fixed + the trial's values."""
        return {**self.base_values, **self.fixed, **values}

    def output_dir(self) -> Path:
        return RunConfig.from_dict(self.params({})).path("output_dir")

    def default_storage(self) -> str:
        return f"sqlite:///{self.output_dir() / f'search-{self.name}.db'}"

    def identity(self) -> dict[str, Any]:
        """What a resumed study must share with this file (JSON-able): the space, the recipe, the pruner."""
        return {"base": self.base, "fixed": self.fixed, "space": self.space, "pruner": self.pruner}


# --- the search file -------------------------------------------------------------------------------
def _check_distribution(name: str, spec: Any, where: str) -> list:
    """Validate one `space` entry; returns the values to validate as run parameters (choices, or low and high)."""
    if name not in RunConfig.__dataclass_fields__ or name in ("run_id", "output_dir", "command", "notes") or name.startswith("search_"):
        raise ConfigError(f"{where}: space[{name!r}]: not a run parameter a search may vary")
    kinds = [k for k in spec if k in DISTRIBUTIONS] if isinstance(spec, dict) else []
    if len(kinds) != 1:
        raise ConfigError(f"{where}: space[{name!r}] = {spec!r}: one of {{float: [low, high]}}, {{int: [low, high]}}, "
                          "{categorical: [values]}, with log: true or step: n for float and int")
    kind = kinds[0]
    unknown = set(spec) - {kind} - DISTRIBUTIONS[kind]
    values = spec[kind]
    if unknown or not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: space[{name!r}] = {spec!r}: {kind} takes a non-empty list"
                          + (f" and no {sorted(unknown)}" if unknown else ""))
    if kind == "categorical":
        return values
    cast = float if kind == "float" else int
    try:
        low, high = (cast(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: space[{name!r}]: {kind} takes [low, high] numbers, got {values!r}") from None
    if not low < high:
        raise ConfigError(f"{where}: space[{name!r}]: low {low} must be below high {high}")
    return [low, high]


def _optuna_class(module: str, spec: Any, where: str, key: str):
    """{"MedianPruner": {...}} -> (the class in optuna.<module>, its arguments)."""
    import optuna

    if not isinstance(spec, dict) or len(spec) != 1 or not hasattr(getattr(optuna, module), next(iter(spec))):
        raise ConfigError(f"{where}: {key} = {spec!r}: one optuna.{module} class with its arguments, e.g. "
                          + ("{MedianPruner: {n_startup_trials: 2}}" if module == "pruners" else "{TPESampler: {seed: 0}}"))
    ((name, kwargs),) = spec.items()
    return getattr(getattr(optuna, module), name), dict(kwargs or {})


def load_search(path: str | Path) -> Search:
    """Read a search file; the space's values, the enqueued trials, pruner and sampler are checked before anything runs."""
    spec, name, base, base_values = load_launch_file(path, SEARCH_KEYS, "search")
    where = str(path)
    fixed, space, enqueue = spec.get("fixed") or {}, spec.get("space") or {}, spec.get("enqueue") or []
    if not isinstance(fixed, dict) or not isinstance(space, dict) or not space or not isinstance(enqueue, list):
        raise ConfigError(f"{where}: 'space' is a non-empty mapping, 'fixed' a mapping, 'enqueue' a list of mappings")
    search = Search(name=name, path=Path(path), base=base, base_values=base_values, fixed=fixed, space=space,
                    enqueue=enqueue, **{k: spec[k] for k in ("trials", "pruner", "sampler", "heartbeat_s") if k in spec})
    if not isinstance(search.trials, int) or search.trials < 1 or not isinstance(search.heartbeat_s, int) or search.heartbeat_s < 1:
        raise ConfigError(f"{where}: 'trials' and 'heartbeat_s' are integers >= 1")
    for key, values in space.items():
        for value in _check_distribution(key, values, where):
            RunConfig.from_dict(search.params({key: value}), source=f"{where} (space {key}: {value!r})")
    for i, values in enumerate(enqueue):
        if not isinstance(values, dict) or set(values) - set(space):
            raise ConfigError(f"{where}: enqueue[{i}] = {values!r}: a mapping of space parameters to values")
        RunConfig.from_dict(search.params(values), source=f"{where} (enqueue[{i}])")
    make_sampler(search.sampler, where)
    cls, kwargs = _optuna_class("pruners", search.pruner, where, "pruner") if search.pruner else (None, {})
    try:
        cls is None or cls(**kwargs)  # wrong arguments fail here, not inside the first trial's run
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: pruner {cls.__name__}: {exc}") from None
    return search


def make_sampler(spec: dict, where: str = "search"):
    """The study's sampler, e.g. {"TPESampler": {"seed": 0}}; it reads each trial's guardrail constraint
    (Optuna >= 5 takes constraints from `Trial.set_constraint`, its successor of `constraints_func`)."""
    cls, kwargs = _optuna_class("samplers", spec, where, "sampler")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: sampler {cls.__name__}: {exc}") from None


def suggest(trial, name: str, spec: dict) -> Any:
    """The trial's value for `name` from its `space` entry (an enqueued trial gets its enqueued value)."""
    if "categorical" in spec:
        return trial.suggest_categorical(name, spec["categorical"])
    kind = "float" if "float" in spec else "int"
    cast = float if kind == "float" else int
    low, high = (cast(v) for v in spec[kind])
    options = {"log": bool(spec.get("log", False)), **({"step": cast(spec["step"])} if "step" in spec else {})}
    return (trial.suggest_float if kind == "float" else trial.suggest_int)(name, low, high, **options)


# --- objective and constraint ----------------------------------------------------------------------
def trial_outcome(metrics: dict) -> tuple[float, float | None]:
    """(domain WER of the best checkpoint, heldout regression in points or None) from a run's metrics:
    the dev block's numbers when the record has dev and test sets (the choice is made on dev)."""
    src = metrics["dev"] if isinstance(metrics.get("dev"), dict) else metrics
    if src.get("tuned_wer") is None:
        raise TrialFailed(f"run {metrics.get('run_id')}: no tuned domain WER in its record")
    return float(src["tuned_wer"]), delta_pts(src.get("heldout_baseline_wer"), src.get("heldout_tuned_wer"))


# --- the study -------------------------------------------------------------------------------------
def open_storage(url: str, heartbeat_s: int):
    """The study's storage with a heartbeat per running trial: a trial silent for 2 x heartbeat_s (its
    worker died) is failed by the next worker to look and queued again with the same values, run id and
    reported evaluations (at most twice per trial)."""
    import warnings

    import optuna

    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats and retries are "experimental" in Optuna since 2.8; they are what resumes a study
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,  # a shared file waits
                    heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2, inherit_intermediate_values=True))
                if url.startswith("sqlite"):
                    _lock_on_begin(storage.engine)
                return storage
        except Exception:  # noqa: BLE001 - two workers starting on a fresh database both create its schema; one loses
            if attempt == 2:  # ("table studies already exists", or a UNIQUE constraint on alembic_version): a bad URL fails thrice
                raise
            time.sleep(1.0)


def _lock_on_begin(engine) -> None:
    """Every transaction on this SQLite engine takes the database's write lock when it begins.

    Optuna hands a queued trial to one worker by reading it WAITING and setting it RUNNING in one
    transaction, relying on SELECT ... FOR UPDATE. SQLite ignores FOR UPDATE, and Python's sqlite3 begins a
    transaction only at its first write, so two workers could both read the trial WAITING and both run it
    (Optuna issue #4621): two `lorakit run`s of one run id at once, writing one history. With BEGIN
    IMMEDIATE the second worker waits for the first to commit, then reads RUNNING and takes another trial.
    (SQLAlchemy's recipe for pysqlite transactions; PostgreSQL and MySQL honour FOR UPDATE already.)"""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # sqlite3's own deferred BEGIN off; the one below is the only one

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # the connections Optuna opened to check the schema predate the listeners


def open_study(search: Search, url: str):
    """Create the study (with the search's enqueued trials first) or load it; a study created from
    another space, recipe or pruner is refused, naming the difference."""
    import json

    import optuna

    storage, sampler = open_storage(url, search.heartbeat_s), make_sampler(search.sampler, str(search.path))
    identity = json.loads(json.dumps(search.identity()))  # as the storage keeps it
    try:
        study = optuna.create_study(storage=storage, study_name=search.name, direction="minimize", sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=search.name, storage=storage, sampler=sampler)
        recorded = study.user_attrs.get(SEARCH_ATTR)
        if recorded not in (None, identity):
            changed = sorted(k for k in identity if recorded.get(k) != identity[k])
            raise ConfigError(f"{search.path}: the study {search.name!r} in {url} searches another {', '.join(changed)}; "
                              "give the search another name, or another --storage") from None
        return study
    study.set_user_attr(SEARCH_ATTR, identity)
    study.set_user_attr(PRUNER_ATTR, search.pruner)  # every trial's run builds this pruner (experiment/trial.py)
    for values in search.enqueue:
        study.enqueue_trial(values)
    return study


def finished_trials(study) -> int:
    """Trials that count towards `trials`: complete (feasible or not) and pruned."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def objective(trial, search: Search, n: int, launch: Callable[[SweepRun], str], storage_url: str) -> float:
    """One trial: its values, its run (an ordinary `lorakit run`), its objective and constraint from the record."""
    import optuna
    from optuna.trial import TrialState

    taken = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    if sum(t.number < trial.number for t in taken) >= n:
        trial.set_user_attr("surplus", True)
        raise SurplusTrial(f"trial {trial.number}: {n} trials are already finished or running")
    values = {k: suggest(trial, k, spec) for k, spec in search.space.items()}
    run_id = trial.user_attrs.get("run_id") or f"{search.name}-t{trial.number}"  # a retried trial keeps its run (and resumes it)
    trial.set_user_attr("run_id", run_id)
    identity = {"search_storage": storage_url, "search_study": search.name, "search_trial": trial.number}
    params = {k: getattr(RunConfig.from_dict(search.params(values)), k) for k in search.params(values)}  # typed as the run sees them
    trial.set_user_attr("guardrail", RunConfig.from_dict(params).guardrail)
    command = reproduce_command(search.base, {**search.fixed, **{k: params[k] for k in values}, **identity}, run_id)
    say(f"search {search.name}: trial {trial.number} ({run_id}) starts, {finished_trials(trial.study)} of {n} finished")
    try:
        status = launch(SweepRun(run_id=run_id, variation=values, params={**params, **identity}, command=command))
    except KeyboardInterrupt:  # Optuna fails the trial; queue it again so the next `lorakit search` resumes its run
        trial.study.enqueue_trial(values, user_attrs={"run_id": run_id})
        raise
    metrics = read_metrics(search.output_dir() / run_id) or {}
    if status not in ("finished", "skipped") or metrics.get("status") != "finished":
        raise TrialFailed(f"{run_id}: {status}" + (f" ({metrics['error']})" if metrics.get("error") else ""))
    value, regression = trial_outcome(metrics)
    trial.set_user_attr("heldout_regression_pts", regression)
    # the constraint (feasible when <= 0): Optuna's best trial is then the best within the guardrail
    # (`record.guardrail_excess`: the rounding selection and the verdict use, so an exact 0.2 pt is feasible)
    trial.set_constraint("heldout_regression", 0.0 if regression is None else guardrail_excess(regression, trial.user_attrs["guardrail"]))
    if metrics.get("stop_reason") == "pruned":
        raise optuna.TrialPruned(f"{run_id} pruned after step {metrics.get('steps')}")
    return value


def worker(study, search: Search, n: int, launch: Callable[[SweepRun], str], storage_url: str,
           tally: Tally | None = None) -> None:
    """Trials until the study holds `n` finished ones; waits while the last ones run elsewhere (a dead
    worker's trial is failed and re-queued once its heartbeat is stale); gives up after MAX_FAILURES
    failed trials in a row. `tally`: the bar of finished trials, moved after each of this worker's trials."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    failures = 0
    while failures < MAX_FAILURES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        done, running = finished_trials(study), states.count(TrialState.RUNNING)
        if done >= n:
            return
        if done + running >= n and TrialState.WAITING not in states:
            time.sleep(min(search.heartbeat_s, 5))
            continue
        failed: list[int] = []

        def one(trial) -> float:
            try:
                return objective(trial, search, n, launch, storage_url)
            except TrialFailed:
                failed.append(trial.number)
                raise

        study.optimize(one, n_trials=1, catch=(TrialFailed, SurplusTrial))
        failures = failures + 1 if failed else 0
        if tally is not None:
            tally.reach(finished_trials(study))
    print(f"search {search.name}: a worker stops after {MAX_FAILURES} failed trials in a row", flush=True)


# --- execution -------------------------------------------------------------------------------------
def _launcher(search: Search, jobs: int, out_dir: Path, ray_address: str | None, n: int) -> tuple[Callable[[SweepRun], str], int]:
    """(launch one trial's run, how many trials at a time: at most `n`). One job: each run in this process (its
    notebook's output on the terminal, as `lorakit run`); several: each a `lorakit run` process in a job
    slot (cores // jobs threads, a GPU each when there are GPUs), its output in <output_dir>/.search-logs/;
    Ray: each a Ray task, as many at a time as the cluster has slots (its GPUs, else its CPUs: see RaySlots)."""
    if ray_address:
        slots = RaySlots(ray_address)
        print(f"search {search.name}: Ray ({ray_address}), {slots.slots} trial(s) at a time, {slots.describe()}", flush=True)
        return slots.run, min(slots.slots, n)  # more workers than trials would only wait
    if jobs == 1:
        return (lambda run: execute(run.params, run.run_id, command=shlex.join(run.command))), 1
    return JobSlots(jobs, out_dir, out_dir / ".search-logs").run, jobs


def drive(study, search: Search, n: int, launch: Callable[[SweepRun], str], url: str, jobs: int, bar: bool) -> None:
    """`jobs` worker threads on the study until it holds `n` finished trials; `bar`: under a bar of
    finished trials (runs in log files or on Ray; one job in this process streams its run's own bars)."""
    tally = Tally(n, f"search {search.name}", unit="trial", initial=min(n, finished_trials(study))) if bar else None
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda _: worker(study, search, n, launch, url, tally), range(jobs)))
    finally:
        if tally is not None:
            tally.close()


def run_search(path: str | Path, trials: int | None = None, jobs: int = 1, storage: str | None = None,
               analysis: bool = True, ray_address: str | None = None) -> int:
    """Run (or resume) the study of a search file until it holds `trials` finished trials, `jobs` at a
    time (or each trial's run a Ray task at `ray_address`, as many at a time as the cluster has slots),
    then the analysis notebook over its runs and the study. Returns 0 when the study holds them.

    The study is driven from this process either way (one worker thread per slot asks Optuna for a trial
    and tells it the result); the trial's run opens the storage itself to report its evaluations to the
    pruner, so on Ray the storage URL must be reachable from every node (see the README's Searches)."""
    if ray_address and jobs != 1:
        raise ConfigError(f"--jobs {jobs} and --ray {ray_address}: choose one (on Ray the cluster's slots set the parallelism)")
    for name, value in (("--jobs", jobs), ("--trials", trials)):
        if value is not None and value < 1:  # --trials 0 once meant the file's count, --jobs 0 a ZeroDivisionError
            raise ConfigError(f"{name} {value}: an integer >= 1")
    search = load_search(path)
    n = search.trials if trials is None else trials
    check_inputs_exist(RunConfig.from_dict(search.params({})))  # a missing manifest fails now, not in every trial
    out_dir = search.output_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage or search.default_storage()
    study = open_study(search, url)
    launch, jobs = _launcher(search, jobs, out_dir, ray_address, n)
    print(f"search {search.name}: study in {url}, {finished_trials(study)} of {n} trials finished, {jobs} job(s)", flush=True)
    started = time.time()
    drive(study, search, n, launch, url, jobs, bar=jobs > 1 or bool(ray_address))
    done = finished_trials(study)
    print(f"search {search.name}: {done} of {n} trials finished ({time.time() - started:.0f} s)", flush=True)
    ok = done >= n
    if analysis:
        ok = run_analysis(search, study, url, out_dir) and ok
    return 0 if ok else 1


def run_analysis(search: Search, study, url: str, out_dir: Path) -> bool:
    """notebooks/analysis.ipynb over the trials' runs and the study, into <output_dir>/analysis-search-<name>.ipynb
    (figures in <output_dir>/figures-search-<name>/)."""
    named = [t.user_attrs.get("run_id") for t in study.get_trials(deepcopy=False)]
    ids = [i for i in dict.fromkeys(named) if i and (out_dir / i).is_dir()]
    return execute_analysis(out_dir / f"analysis-search-{search.name}.ipynb", {
        "runs_dir": str(out_dir), "run_ids": ",".join(ids), "figures_dir": str(out_dir / f"figures-search-{search.name}"),
        "search_storage": url, "search_study": search.name})
