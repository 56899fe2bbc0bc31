"""A `lorakit search` study, read back for the analysis notebook: one row per trial (its run, state,
values, objective, heldout regression, feasibility), the best trial that passes the guardrail, and
Optuna's matplotlib views: optimisation history, intermediate values (the pruning), parameter importances.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from ..display import format_pts, format_wer, markdown_table


def open_study(storage: str, name: str):
    """The study `name` in `storage` (any Optuna storage URL); None when no study is asked for."""
    if not storage or not name:
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=storage)


def best_feasible(study):
    """The best trial among those within the guardrail (Optuna's constrained best), or None."""
    try:
        return study.best_trial
    except ValueError:  # no complete trial, or none feasible
        return None


def feasible(trial) -> bool | None:
    """Whether the trial's constraint (heldout regression - guardrail) is <= 0; None before it has one."""
    constraints = trial.constraints  # {name: value}, from Trial.set_constraint
    return None if not constraints else all(c <= 0 for c in constraints.values())


def trial_rows(study) -> list[dict]:
    best = best_feasible(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        regression = t.user_attrs.get("heldout_regression_pts")
        rows.append({"trial": t.number, "run": t.user_attrs.get("run_id", ""), "state": t.state.name.lower(),
                     "params": ", ".join(f"{k}={_short(v)}" for k, v in t.params.items()),
                     "domain": format_wer(t.value), "regression": format_pts(regression),
                     "feasible": {True: "yes", False: "no", None: ""}[feasible(t)],
                     "best": "★" if best is not None and t.number == best.number else ""})
    return rows


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def study_markdown(study) -> str:
    """The trials as a Markdown table, then the best feasible trial in words."""
    if study is None:
        return "No search study given (`search_storage`, `search_study`)."
    table = markdown_table(trial_rows(study), [("trial", "Trial"), ("run", "Run"), ("state", "State"), ("params", "Values"),
                                               ("domain", "Domain WER"), ("regression", "Heldout Δ (pts)"),
                                               ("feasible", "Within guardrail"), ("best", "Best")])
    best = best_feasible(study)
    verdict = ("no trial is both complete and within the guardrail" if best is None else
               f"best trial within the guardrail: {best.number} ({best.user_attrs.get('run_id')}), domain WER {best.value:.4f}")
    return f"{table}\n\nStudy {study.study_name!r}: {verdict}.\n"


def study_figures(study) -> list[tuple[str, Figure]]:
    """(name, figure) for the optimisation history, the intermediate values and the parameter importances
    (the last only with two complete trials that vary some value)."""
    if study is None:
        return []
    import optuna.visualization.matplotlib as ovm

    from optuna.trial import TrialState

    name = f"search-{study.study_name}"
    figures = [(f"{name}-history", ovm.plot_optimization_history(study, target_name="domain WER").figure),
               (f"{name}-intermediate", ovm.plot_intermediate_values(study).figure)]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) >= 2 and any(len({str(t.params.get(k)) for t in complete}) > 1 for k in complete[0].params):
        figures.append((f"{name}-importances", ovm.plot_param_importances(study, target_name="domain WER").figure))
    best = best_feasible(study)
    figures[0][1].axes[0].set_title("optimisation history (grey: outside the guardrail)\n"
                                    + (f"best within the guardrail: trial {best.number}, {best.value:.4f}" if best is not None
                                       else "no trial within the guardrail"), fontsize=10)
    for _, fig in figures:
        fig.set_size_inches(9, 4.5)
        fig.tight_layout()
    return figures
