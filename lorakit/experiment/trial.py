"""A run as one trial of a `lorakit search` study: at every evaluation it reports its domain WER (the
dev set's, where the run has dev and test sets) to the study and asks the study's pruner whether to
stop. The only place a run touches Optuna; a run that is not a trial (`search_trial` -1) never
imports it.

The pruner is the one the search declared (`pruner:` in its YAML), which the search stores with the
study (user attribute `lorakit_pruner`): every trial of a study, on any machine, prunes by one rule.
"""

from __future__ import annotations

from ..config import RunConfig
from .distributed import broadcast

PRUNER_ATTR = "lorakit_pruner"  # the study's user attribute holding {"<optuna.pruners class>": {arguments}}
SQLITE_TIMEOUT_S = 60  # a trial's kernel and the search's workers share one SQLite file: wait for its lock


def open_storage(url: str):
    """Optuna's storage for `url`; SQLite waits for a busy database instead of failing at once."""
    import optuna

    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
    return optuna.storages.get_storage(url)


def make_pruner(spec: dict | None):
    """{"MedianPruner": {"n_startup_trials": 2}} -> optuna.pruners.MedianPruner(n_startup_trials=2); empty: NopPruner."""
    import optuna

    if not spec:
        return optuna.pruners.NopPruner()
    ((name, kwargs),) = spec.items()
    return getattr(optuna.pruners, name)(**(kwargs or {}))


class TrialHook:
    """Reports (step, value) to the trial and answers the pruner's question; under several processes
    the main one asks and every process gets its answer (they stop together)."""

    def __init__(self, cfg: RunConfig, accelerator) -> None:
        self.accelerator = accelerator
        self.trial = None
        if accelerator is None or accelerator.is_main_process:
            import optuna

            storage = open_storage(cfg.search_storage)
            study_id = storage.get_study_id_from_name(cfg.search_study)
            pruner = make_pruner(storage.get_study_user_attrs(study_id).get(PRUNER_ATTR))
            study = optuna.load_study(study_name=cfg.search_study, storage=storage, pruner=pruner)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, cfg.search_trial)
            self.trial = optuna.trial.Trial(study, trial_id)

    def should_prune(self, step: int, value: float) -> bool:
        prune = False
        if self.trial is not None:
            self.trial.report(value, step)  # a resumed run reports a step again: Optuna keeps the first value
            prune = self.trial.should_prune()
            if prune:
                print(f"step {step}: pruned by the study's pruner (domain WER {value:.4f})")
        return bool(broadcast(prune, self.accelerator))


def connect(cfg: RunConfig, accelerator=None) -> TrialHook | None:
    """The hook of a run that is a search trial; None for any other run."""
    return TrialHook(cfg, accelerator) if cfg.search_trial >= 0 else None
