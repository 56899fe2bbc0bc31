"""Experiment trackers (`report_to`): the run record, mirrored to TensorBoard, MLflow or Weights & Biases
(offline) through accelerate's tracker classes. The record stays the source of truth; a tracker sees
what the record is given: the configuration when the run starts, every training row (loss, gradient
norm, LR) and every evaluation (each set's WER) at its step, and the final metrics (the verdict's
inputs: baseline and tuned WER per set, best step) when the run ends.

Where the logs go: TensorBoard and wandb into `<run folder>/trackers/`; MLflow to its tracking URI
(MLFLOW_TRACKING_URI, as MLflow itself reads it), experiment `lorakit`, one MLflow run per lorakit run.
"""

from __future__ import annotations

import numbers
from pathlib import Path

from ..config import RunConfig
from ..record import RunRecord

EXPERIMENT = "lorakit"  # the tracker's project / experiment name
FINAL_KEYS = ("baseline_wer", "tuned_wer", "heldout_baseline_wer", "heldout_tuned_wer", "best_step", "best_alpha", "steps",
              "elapsed_s", "trainable_params")


def make_tracker(kind: str, run_id: str, folder: Path):
    """One of accelerate's trackers, started (imports the tracker's package: an optional extra)."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    logs = folder / "trackers"
    if kind == "tensorboard":
        tracker = TensorBoardTracker(run_id, logs)
    elif kind == "mlflow":
        tracker = MLflowTracker(experiment_name=EXPERIMENT, run_name=run_id)
    else:
        logs.mkdir(parents=True, exist_ok=True)
        tracker = WandBTracker(EXPERIMENT, name=run_id, mode="offline", dir=str(logs))  # accelerate passes EXPERIMENT as the project
    tracker.start()
    return tracker


def numbers_of(row: dict, prefix: str) -> dict[str, float]:
    """The numeric values of a record row (booleans excepted), as '<prefix>/<key>'."""
    return {f"{prefix}/{k}": float(v) for k, v in row.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and k not in ("step",)}


class TrackedRecord(RunRecord):
    """A RunRecord that also reports to a tracker: started at the run's first history row (a run refused
    before it trains leaves no tracker run), ended when the record's status leaves 'running'."""

    def __init__(self, folder: Path, cfg: RunConfig, run_id: str) -> None:
        super().__init__(folder)
        self.cfg, self.run_id, self.tracker = cfg, run_id, None

    def _start(self) -> None:
        if self.tracker is None:
            self.tracker = make_tracker(self.cfg.report_to, self.run_id, self.folder)
            config = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in self.cfg.to_dict().items()}
            self.tracker.store_init_configuration({**config, "run_id": self.run_id})

    def append_history(self, row: dict) -> None:
        super().append_history(row)
        self._start()
        prefix = "scale" if "alpha" in row else row.get("kind", "train")
        self.tracker.log(numbers_of(row, prefix), step=int(row.get("step", 0)))

    def update_metrics(self, **values) -> dict:
        data = super().update_metrics(**values)
        if values.get("status") in ("finished", "failed", "interrupted") and self.tracker is not None:
            final = {k: data[k] for k in FINAL_KEYS if data.get(k) is not None}
            self.tracker.log(numbers_of(final, "final"), step=int(data.get("steps") or 0))
            self.tracker.finish()
            self.tracker = None
        return data


def run_record(folder: Path, cfg: RunConfig, run_id: str) -> RunRecord:
    """The main process's record of a run: a TrackedRecord when `report_to` names a tracker."""
    return RunRecord(folder) if cfg.report_to == "none" else TrackedRecord(folder, cfg, run_id)
