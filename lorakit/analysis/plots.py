"""Figures of runs: WER curves, comparisons across runs, deltas with CIs, error breakdowns.

Figures are built as `matplotlib.figure.Figure` objects directly (no pyplot), so nothing depends
on a display or on global pyplot state: they render with Agg, headless or not, are freed when
dropped, and show in a notebook through their own PNG repr.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure

from ..display import format_lr
from .breakdown import RunBreakdown
from .matrix import RunMatrix
from ..config import NAMING_FIELDS
from ..env import project_path
from .runs import Run, load_run, select_runs
from .stats import row_guardrail

PathLike = str | os.PathLike

_SPLITS = (("domain", "domain_wer", "baseline_wer"), ("heldout", "heldout_wer", "heldout_baseline_wer"))
_LABELS = {"domain_wer": "domain WER", "heldout_wer": "heldout WER", "loss": "training loss",
           "lr": "learning rate"}


class NotebookFigure(Figure):
    """A Figure that IPython displays as PNG even when pyplot (and its inline hook) was never loaded."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_run_curves(run: Run | PathLike, save: bool = False, figures_dir: PathLike = "figures") -> Figure:
    """Domain and heldout WER against step (baselines dashed, best checkpoint starred), and
    training loss with the learning rate on a second axis. `run` is a Run or a run folder;
    `save` also writes `<figures_dir>/curves_<run_id>.png` and `.svg`."""
    if not isinstance(run, Run):
        run = load_run(run)
    fig = NotebookFigure(figsize=(11, 3.8), layout="constrained")
    ax_wer, ax_loss = fig.subplots(1, 2)
    best = run.best_step()
    for (name, key, base_key), colour in zip(_SPLITS, ("C0", "C1")):
        points = [(e["step"], e[key]) for e in run.evals if e.get(key) is not None]
        if points:
            steps, wers = zip(*points)
            ax_wer.plot(steps, wers, "o-", color=colour, label=name)
            at_best = [w for s, w in points if s == best]
            if at_best:
                ax_wer.plot([best], at_best, "*", color=colour, markersize=16,
                            markeredgecolor="black", label=f"best (step {best})" if name == "domain" else None)
        if run.selection_baseline(base_key) is not None:
            ax_wer.axhline(run.selection_baseline(base_key), color=colour, linestyle="--", linewidth=1,
                           label=f"{name} baseline")
    dev = " on the dev sets" if run.metrics.get("dev") else ""
    ax_wer.set(xlabel="step", ylabel="WER", title=f"{run.run_id} ({run.status}): WER{dev}")
    if ax_wer.lines:
        ax_wer.legend(fontsize="small")
    if not run.evals:
        _no_data(ax_wer, "no evaluations recorded")

    log = [t for t in run.train_log if t.get("loss") is not None]
    if log:
        ax_loss.plot([t["step"] for t in log], [t["loss"] for t in log], color="C2", label="loss")
        ax_lr = ax_loss.twinx()
        ax_lr.plot([t["step"] for t in log], [t.get("lr") for t in log], color="C3", linestyle=":",
                   label="learning rate")
        ax_lr.set_ylabel("learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        fig.legend(handles=ax_loss.lines + ax_lr.lines, loc="outside lower right", fontsize="small", ncols=2)
    else:
        _no_data(ax_loss, "no training log")
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss and learning rate")
    if save:
        save_figure(fig, f"curves_{run.run_id}", project_path(figures_dir))
    return fig


def plot_adapter_scaling(run: Run | PathLike) -> Figure:
    """The alpha trade-off of a run's best adapter: heldout against domain WER for each scale alpha
    (alpha 0, the base model, is the baselines), the guardrail as a dotted line (heldout baseline +
    `guardrail` points), and the chosen (step, alpha) starred."""
    if not isinstance(run, Run):
        run = load_run(run)
    fig = NotebookFigure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    curve = sorted(run.scaling, key=lambda p: p["alpha"])
    base_dom, base_held = run.selection_baseline("baseline_wer"), run.selection_baseline("heldout_baseline_wer")
    points = [p for p in curve if p.get("heldout_wer") is not None]
    if base_dom is not None and base_held is not None and points:
        points = [{"alpha": 0.0, "domain_wer": base_dom, "heldout_wer": base_held, "chosen": False}, *points]
    if points:
        ax.plot([p["domain_wer"] for p in points], [p["heldout_wer"] for p in points], "o-", color="C0", label="scaled adapter")
        for p in points:
            ax.annotate(f"α={p['alpha']:g}" + (" (base)" if p["alpha"] == 0 else ""), (p["domain_wer"], p["heldout_wer"]),
                        textcoords="offset points", xytext=(6, 4), fontsize="small")
        chosen = [p for p in points if p["chosen"]]
        if chosen:
            ax.plot([chosen[0]["domain_wer"]], [chosen[0]["heldout_wer"]], "*", color="C0", markersize=16, markeredgecolor="black",
                    label=f"chosen (step {chosen[0]['step']}, α={chosen[0]['alpha']:g})")
        if base_held is not None:
            guardrail = run.config.get("guardrail", 0.2)
            ax.axhline(base_held + guardrail / 100, color="C3", linestyle=":", label=f"guardrail (+{guardrail:g} pt)")
        ax.legend(fontsize="small")
    else:
        _no_data(ax, "no adapter scaling recorded (adapter_scales)")
    dev = " (dev sets)" if run.metrics.get("dev") else ""
    ax.set(xlabel="domain WER", ylabel="heldout WER", title=f"{run.run_id}: adapter scale α{dev}")
    return fig


def scaling_figures(runs: Sequence[Run]) -> list[tuple[str, Figure]]:
    """`plot_adapter_scaling` for each run that tried adapter scales, named `scaling_<run_id>`."""
    return [(f"scaling_{r.run_id}", plot_adapter_scaling(r)) for r in runs if r.scaling]


def run_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Legend labels: the run id plus the config fields that differ between the runs."""
    keys = sorted({k for r in runs for k in r.config} - NAMING_FIELDS)
    varying = [k for k in keys if len({repr(r.config.get(k)) for r in runs}) > 1]
    labels = {}
    for r in runs:
        parts = []
        for k in varying:
            v = r.config.get(k)
            if k == "use_dora":
                parts.append("DoRA" if v else "LoRA")
            else:
                parts.append(f"{k}={format_lr(v) if k == 'lr' and v is not None else v}")
        labels[r.run_id] = r.run_id + (f" ({', '.join(parts)})" if parts else "")
    return labels


def plot_comparison(runs: Sequence[Run], key: str | Sequence[str] = ("domain_wer", "heldout_wer"),
                    title: str | None = None) -> Figure:
    """Several runs on one figure, one panel per key: domain_wer, heldout_wer, loss or lr.

    WER panels draw each run's baseline dashed in the run's colour.
    """
    keys = [key] if isinstance(key, str) else list(key)
    unknown = [k for k in keys if k not in _LABELS]
    if unknown:
        raise ValueError(f"unknown key {unknown}; choose from {sorted(_LABELS)}")
    fig = NotebookFigure(figsize=(5.5 * len(keys), 3.8), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    labels = run_labels(runs)
    for ax, k in zip(axes, keys):
        for i, run in enumerate(runs):
            colour = f"C{i % 10}"
            source = run.evals if k.endswith("_wer") else run.train_log
            points = [(e["step"], e[k]) for e in source if e.get(k) is not None]
            if points:
                ax.plot(*zip(*points), "o-" if k.endswith("_wer") else "-", color=colour,
                        label=labels[run.run_id], markersize=4)
            base_key = dict((wk, bk) for _, wk, bk in _SPLITS).get(k)
            if base_key and run.get(base_key) is not None:
                ax.axhline(run.get(base_key), color=colour, linestyle="--", linewidth=0.8)
        ax.set(xlabel="step", ylabel=_LABELS[k], title=_LABELS[k] + (" (dashed: baseline)" if k.endswith("_wer") else ""))
        if not ax.lines:
            _no_data(ax, "no data")
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", fontsize="small", ncols=min(3, len(names)))
    if title:
        fig.suptitle(title)
    return fig


def sweep_figures(groups: Sequence[tuple[str, Sequence[Run]]]) -> list[tuple[str, Figure]]:
    """One comparison figure per sweep group from `runs.sweep_groups`, named for saving."""
    return [(f"compare_{field}_" + "_".join(r.run_id for r in members),
             plot_comparison(members, title=f"sweep over {field}")) for field, members in groups]


def comparison_figures(runs: Sequence[Run], run_ids: Sequence[str] | str) -> list[tuple[str, Figure]]:
    """One comparison figure of the runs named in `run_ids` (list or comma-separated); none
    when fewer than two are named."""
    picked = select_runs(runs, run_ids)
    if len(picked) < 2:
        return []
    return [("compare_" + "_".join(r.run_id for r in picked), plot_comparison(picked, title="selected runs"))]


def curve_figures(runs: Sequence[Run]) -> list[tuple[str, Figure]]:
    """`plot_run_curves` for each run, named `curves_<run_id>`."""
    return [(f"curves_{r.run_id}", plot_run_curves(r)) for r in runs]


def breakdown_figures(breakdowns: Sequence[RunBreakdown]) -> list[tuple[str, Figure]]:
    """`plot_breakdown` for each breakdown, named `breakdown_<run_id>_<split>`."""
    return [(f"breakdown_{b.run_id}_{b.split}", plot_breakdown(b)) for b in breakdowns]


def plot_deltas(matrix: RunMatrix) -> Figure:
    """Domain and heldout WER deltas (points) with their 95% CIs, one row per finished run;
    dotted lines at the acceptance thresholds."""
    rows = [r for r in matrix.rows if r.get("domain_delta_pts") is not None]
    fig = NotebookFigure(figsize=(10, 0.5 * max(len(rows), 2) + 1.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    limits = {"domain": [-matrix.criteria.get("min_domain_gain_pts", 1.0)],  # heldout: each run's own guardrail unless set
              "heldout": sorted({row_guardrail(r, matrix.criteria.get("max_heldout_regression_pts")) for r in rows})}
    for ax, split in zip(axes, ("domain", "heldout")):
        for y, r in enumerate(rows):
            d, lo, hi = r.get(f"{split}_delta_pts"), r.get(f"{split}_ci_low"), r.get(f"{split}_ci_high")
            if d is None:
                continue
            colour = "C2" if r["verdict"].startswith("accept") else "C3" if r["verdict"].startswith("reject") else "C7"
            if lo is not None:
                ax.errorbar(d, y, xerr=[[d - lo], [hi - d]], fmt="o", color=colour, capsize=3)
            else:
                ax.plot(d, y, "o", color=colour)
        ax.axvline(0, color="black", linewidth=0.8)
        for limit in limits[split]:
            ax.axvline(limit, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="Δ WER, points (tuned − baseline)", title=f"{split} (95% CI)")
    axes[0].set_yticks(range(len(rows)), [r["run_id"] for r in rows])
    if not rows:
        _no_data(axes[0], "no finished runs")
    axes[0].invert_yaxis()
    return fig


def plot_breakdown(b: RunBreakdown) -> Figure:
    """S/D/I of baseline vs tuned, WER per speaker, per-utterance error change, and (with a term
    list) the term error rates."""
    n = 4 if b.terms else 3
    fig = NotebookFigure(figsize=(4.2 * n, 3.8), layout="constrained")
    axes = fig.subplots(1, n)
    width = 0.4
    kinds = ("sub", "del", "ins")
    for off, tag, c in ((-width / 2, "baseline", b.baseline), (width / 2, "tuned", b.tuned)):
        axes[0].bar([i + off for i in range(3)], [c[k] for k in kinds], width, label=tag)
    axes[0].set_xticks(range(3), ["substitutions", "deletions", "insertions"])
    axes[0].set(ylabel="count", title="error types")
    axes[0].legend(fontsize="small")

    spk = b.speakers
    for off, key in ((-width / 2, "baseline_wer"), (width / 2, "tuned_wer")):
        axes[1].bar([i + off for i in range(len(spk))], [s[key] or 0 for s in spk], width,
                    label=key.split("_")[0])
    axes[1].set_xticks(range(len(spk)), [s["speaker"] for s in spk], rotation=45, ha="right")
    axes[1].set(ylabel="WER", title="WER per speaker")

    moved = sorted(b.changes, key=lambda c: c["delta"])
    axes[2].bar(range(len(moved)), [c["delta"] for c in moved],
                color=["C2" if c["delta"] < 0 else "C3" if c["delta"] > 0 else "C7" for c in moved])
    axes[2].axhline(0, color="black", linewidth=0.8)
    s = b.summary()
    axes[2].set(xlabel="utterances (sorted)", ylabel="Δ errors (tuned − baseline)",
                title=f"{s['better']} better, {s['worse']} worse")

    if b.terms:
        terms = b.terms[::-1]
        y = range(len(terms))
        axes[3].barh([i - width / 2 for i in y], [t["baseline_rate"] or 0 for t in terms], width, label="baseline")
        axes[3].barh([i + width / 2 for i in y], [t["tuned_rate"] for t in terms], width, label="tuned")
        axes[3].set_yticks(list(y), [t["term"] for t in terms])
        axes[3].set(xlabel="error rate", xlim=(0, 1.05), title="most frequent domain terms")
        axes[3].legend(fontsize="small")
    fig.suptitle(f"{b.run_id} · {b.split}")
    return fig


def figure_name(text: str) -> str:
    """A safe file stem: letters, digits, dot, dash and underscore."""
    return re.sub(r"[^\w.-]+", "_", text).strip("_")[:150] or "figure"


def save_figure(fig: Figure, name: str, figures_dir: PathLike = "figures") -> list[Path]:
    """Write `<figures_dir>/<name>.png` and `.svg`; returns both paths."""
    folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{figure_name(name)}.{ext}" for ext in ("png", "svg")]
    for p in paths:
        fig.savefig(p, dpi=110 if p.suffix == ".png" else None)
    return paths


def save_figures(named: Sequence[tuple[str, Figure]], figures_dir: PathLike = "figures") -> list[Path]:
    """`save_figure` for each (name, figure); returns every path written."""
    return [p for name, fig in named for p in save_figure(fig, name, figures_dir)]


def save_and_show(named: Sequence[tuple[str, Figure]], figures_dir: PathLike = "figures") -> None:
    """Save each (name, figure) as PNG and SVG, then display it in the notebook."""
    from IPython.display import Image, display

    paths = save_figures(named, figures_dir)
    print(f"saved {len(paths)} files to {figures_dir}" if paths else "no figures")
    for png in paths[::2]:  # the PNG just written: no second rendering, no pyplot needed
        display(Image(filename=str(png)))
