"""Figures over the hand-made run records: what is drawn where, and that files are written."""

import pytest
from matplotlib.figure import Figure

from fixtures.records import TERMS, copy_runs
from lorakit.analysis import breakdown as bd
from lorakit.analysis import matrix as matrix_mod
from lorakit.analysis import plots, runs


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return {r.run_id: r for r in runs.load_runs(copy_runs(tmp_path_factory.mktemp("p") / "executed"))}


def test_run_curves_show_wer_baselines_best_step_loss_and_lr(loaded):
    fig = plots.plot_run_curves(loaded["dora-r8-lr5e-5"])
    ax_wer, ax_loss, ax_lr = fig.axes
    lines = {line.get_label(): line for line in ax_wer.lines}
    assert list(lines["domain"].get_xdata()) == [50, 100, 150, 200]
    assert list(lines["heldout"].get_ydata()) == pytest.approx([0.041667, 0.041667, 0.033333, 0.041667])
    assert list(lines["domain baseline"].get_ydata()) == pytest.approx([0.183333, 0.183333])
    best = lines["best (step 150)"]
    assert (best.get_marker(), list(best.get_xdata()), list(best.get_ydata())) == ("*", [150], [0.05])
    assert len(ax_loss.lines[0].get_xdata()) == 20  # a train log line every 10 steps
    assert max(ax_lr.lines[0].get_ydata()) == pytest.approx(5e-5)
    assert fig._repr_png_().startswith(b"\x89PNG")  # shows in a notebook without pyplot


def test_run_curves_accept_a_folder_and_survive_missing_parts(loaded, tmp_path):
    fig = plots.plot_run_curves(loaded["lora-r8-lr1e-3"].path, save=True, figures_dir=tmp_path)
    assert "no evaluations recorded" in [t.get_text() for t in fig.axes[0].texts]  # failed before any eval
    assert (tmp_path / "curves_lora-r8-lr1e-3.png").is_file() and (tmp_path / "curves_lora-r8-lr1e-3.svg").is_file()
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert isinstance(plots.plot_run_curves(empty), Figure)


def test_comparison_puts_runs_on_one_figure_with_labels_from_their_differences(loaded):
    sweep = [loaded["dora-r8-lr5e-5"], loaded["dora-r8-lr1e-4"]]
    fig = plots.plot_comparison(sweep)
    assert [ax.get_ylabel() for ax in fig.axes] == ["domain WER", "heldout WER"]
    labels = [line.get_label() for line in fig.axes[0].lines if not line.get_label().startswith("_")]
    assert labels == ["dora-r8-lr5e-5 (lr=5e-5)", "dora-r8-lr1e-4 (lr=1e-4)"]
    mixed = plots.run_labels([loaded["dora-r8-lr5e-5"], loaded["lora-r8-lr3e-4"]])
    assert mixed["lora-r8-lr3e-4"].startswith("lora-r8-lr3e-4 (lr=3e-4, LoRA")
    assert len(plots.plot_comparison(sweep, key="loss").axes) == 1
    with pytest.raises(ValueError, match="unknown key"):
        plots.plot_comparison(sweep, key="accuracy")
    named = plots.sweep_figures(runs.sweep_groups(list(loaded.values())))
    assert [n for n, _ in named][0] == "compare_lr_lora-r8-lr1e-4-old_lora-r8-lr1e-3"
    assert plots.comparison_figures(list(loaded.values()), "dora-r8-lr5e-5") == []


def test_deltas_and_breakdown_figures(loaded):
    active = runs.active(list(loaded.values()))
    matrix = matrix_mod.run_matrix(active, n_resamples=200)
    fig = plots.plot_deltas(matrix)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["dora-r8-lr5e-5", "lora-r8-lr3e-4"]
    report = bd.run_breakdown(loaded["dora-r8-lr5e-5"], "domain", bd.read_terms(TERMS))
    fig = plots.plot_breakdown(report)
    assert len(fig.axes) == 4 and fig.axes[2].get_title() == "11 better, 1 worse"
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [17, 3, 2, 4, 1, 1]  # S, D, I of baseline then tuned
    no_terms = bd.run_breakdown(loaded["dora-r8-lr5e-5"], "heldout")
    assert len(plots.plot_breakdown(no_terms).axes) == 3
    assert isinstance(plots.plot_deltas(matrix_mod.run_matrix([])), Figure)


def test_save_figure_writes_png_and_svg(tmp_path, loaded):
    fig = plots.plot_run_curves(loaded["dora-r8-lr5e-5"])
    png, svg = plots.save_figure(fig, "curves/dora r8: lr5e-5", tmp_path / "figs")
    assert png.name == "curves_dora_r8_lr5e-5.png" and svg.suffix == ".svg"
    assert png.read_bytes().startswith(b"\x89PNG") and b"<svg" in svg.read_bytes()[:500]


def test_adapter_scaling_shows_the_trade_off_the_guardrail_and_the_choice(tmp_path):
    curve = [{"alpha": 1.0, "step": 50, "domain_wer": 0.066, "heldout_wer": 0.178, "chosen": False},
             {"alpha": 0.5, "step": 50, "domain_wer": 0.074, "heldout_wer": 0.071, "chosen": False},
             {"alpha": 0.25, "step": 50, "domain_wer": 0.193, "heldout_wer": 0.0662, "chosen": True}]
    metrics = {"run_id": "scaled", "status": "finished", "baseline_wer": 0.578, "heldout_baseline_wer": 0.065,
               "adapter_scaling": curve, "best_step": 50, "best_alpha": 0.25}
    run = runs.Run("scaled", tmp_path, "finished", metrics, {"guardrail": 0.2}, {}, [], None)
    ax = plots.plot_adapter_scaling(run).axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    trade_off = lines["scaled adapter"]
    assert list(trade_off.get_xdata()) == [0.578, 0.193, 0.074, 0.066]  # alpha 0 (the base model) to 1
    assert list(trade_off.get_ydata()) == [0.065, 0.0662, 0.071, 0.178]
    assert list(lines["guardrail (+0.2 pt)"].get_ydata()) == pytest.approx([0.067, 0.067])
    chosen = lines["chosen (step 50, α=0.25)"]
    assert (list(chosen.get_xdata()), list(chosen.get_ydata())) == ([0.193], [0.0662])
    assert [t.get_text() for t in ax.texts] == ["α=0 (base)", "α=0.25", "α=0.5", "α=1"]
    unscaled = runs.Run("plain", tmp_path, "finished", {"run_id": "plain"}, {}, {}, [], None)
    assert plots.scaling_figures([run, unscaled])[0][0] == "scaling_scaled" and len(plots.scaling_figures([unscaled])) == 0
    assert "no adapter scaling" in plots.plot_adapter_scaling(unscaled).axes[0].texts[0].get_text()


def test_with_test_sets_the_scaling_and_curves_use_the_dev_baselines_they_were_chosen_against(tmp_path):
    """The alpha curve and the evaluations during training are dev-set numbers: alpha 0 and the guardrail come from
    the dev baselines (`metrics["dev"]`), not from the test baselines the record reports."""
    curve = [{"alpha": 1.0, "step": 150, "domain_wer": 0.104, "heldout_wer": 0.112, "chosen": False},
             {"alpha": 0.5, "step": 150, "domain_wer": 0.172, "heldout_wer": 0.086, "chosen": True}]
    metrics = {"run_id": "devtest", "status": "finished", "baseline_wer": 0.365, "heldout_baseline_wer": 0.067,
               "dev": {"baseline_wer": 0.379, "heldout_baseline_wer": 0.098}, "adapter_scaling": curve, "best_step": 150}
    history = [{"kind": "eval", "step": 150, "domain_wer": 0.104, "heldout_wer": 0.112, "best": True}]
    run = runs.Run("devtest", tmp_path, "finished", metrics, {"guardrail": 0.2}, {}, history, None)
    ax = plots.plot_adapter_scaling(run).axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert list(lines["scaled adapter"].get_xdata())[0] == 0.379 and list(lines["scaled adapter"].get_ydata())[0] == 0.098
    assert list(lines["guardrail (+0.2 pt)"].get_ydata()) == pytest.approx([0.100, 0.100])
    assert ax.get_title().endswith("(dev sets)")
    wer_ax = plots.plot_run_curves(run).axes[0]
    baselines = {line.get_label(): line.get_ydata()[0] for line in wer_ax.lines if "baseline" in line.get_label()}
    assert baselines == {"domain baseline": 0.379, "heldout baseline": 0.098}
