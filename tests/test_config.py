"""Parameters: defaults file == dataclass == notebook parameters cell; recipes hold only deltas;
unknown or ill-typed parameters fail before any model loads, naming the parameter."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import nbformat
import pytest
import yaml

from lorakit.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_holds_one_commented_plain_value_per_line(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"], f"{path.name}: the first code cell holds the parameters"
    assert _parameters_cell(path)


def _parameters_cell(path: Path) -> dict:
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
    values = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell holds plain assignments only"
        values[node.targets[0].id] = ast.literal_eval(node.value)  # plain values: literal_eval fails on anything else
    for line in cells[0].source.splitlines():
        if "=" in line:
            assert "#" in line, f"{path.name}: parameter line without a comment: {line!r}"
    return values


def test_default_yaml_matches_the_dataclass_and_the_notebook():
    defaults = yaml.safe_load((ROOT / "params" / "default.yaml").read_text())
    assert RunConfig.from_dict(defaults) == RunConfig()
    assert set(defaults) == {f.name for f in dataclasses.fields(RunConfig)}
    assert _parameters_cell(ROOT / "notebooks" / "train.ipynb") == defaults


def test_recipes_hold_only_deltas_and_validate():
    defaults = yaml.safe_load((ROOT / "params" / "default.yaml").read_text())
    recipes = [p for p in (ROOT / "params").glob("*.yaml") if p.name != "default.yaml"]
    names = {p.stem for p in recipes}
    old_team = {"h1-expanded", "h2-expanded", "h3-lr1e4-expanded", "h3-lr3e4-expanded", "h4-domain-expanded",
                "exp_1_1_baseline_fixed", "exp_2_1_dora_base", "exp_2_1b_dora_high_lr"}
    assert old_team | {"demo"} <= names
    for path in recipes:
        values = yaml.safe_load(path.read_text()) or {}
        cfg = RunConfig.from_dict(values, source=path.name)
        same = {k for k in values if getattr(cfg, k) == getattr(RunConfig(), k)}
        assert not same, f"{path.name} repeats defaults: {same}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_hold_calls_not_logic(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), f"{path.name}: logic in a notebook"
        assert "pip install" not in cell.source and "!pip" not in cell.source


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"lrr": 1e-4}, "'lrr'"),
        ({"max_steps": "many"}, "'max_steps'"),
        ({"use_dora": 3}, "'use_dora'"),
        ({"lr": 0}, "'lr'"),
        ({"lr": -1e-4}, "'lr'"),
        ({"max_steps": 0}, "'max_steps'"),
        ({"max_steps": 10, "eval_interval": 20}, "'eval_interval'"),
        ({"scheduler": "exponential"}, "'scheduler'"),
        ({"precision": "fp8"}, "'precision'"),
        ({"guardrail": -0.1}, "'guardrail'"),
        ({"lr": float("nan")}, "'lr'"),
        ({"run_id": "a b/c"}, "'run_id'"),
    ],
)
def test_bad_parameters_are_named(values, needle):
    with pytest.raises(ConfigError, match=needle):
        RunConfig.from_dict(values)


def test_papermill_style_values_are_accepted():
    cfg = RunConfig.from_dict({"lr": "5e-5", "max_steps": 10.0, "eval_interval": 5, "use_dora": "True", "target_modules": ["q_proj", "v_proj"],
                               "init_lora_weights": "False"})
    assert cfg.lr == 5e-5 and cfg.max_steps == 10 and cfg.use_dora is True and cfg.target_module_list() == ["q_proj", "v_proj"]
    assert cfg.init_lora_weights is False and RunConfig.from_dict({"init_lora_weights": "gaussian"}).init_lora_weights == "gaussian"


def test_namespace_rejects_a_misspelt_injected_parameter():
    import math

    ns = {"lr": 5e-5, "math": math, "RunConfig": RunConfig, "In": [], "_": None, "learning_rate": 1e-4}
    with pytest.raises(ConfigError, match="'learning_rate'"):
        RunConfig.from_namespace(ns)


def test_missing_manifest_fails_before_the_model_loads(tmp_path, monkeypatch):
    from lorakit.experiment import train

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a run whose manifest is missing")

    monkeypatch.setattr(train, "load_model", no_model)
    with pytest.raises(ConfigError, match="train_manifest.*not found"):
        train.run(RunConfig(train_manifest=str(tmp_path / "nope.jsonl"), output_dir=str(tmp_path / "runs")))
    assert not (tmp_path / "runs").exists()  # no run folder, no record for a run that never started


def test_the_smoke_profile_is_applied_where_the_notebook_builds_its_config(monkeypatch):
    """LORAKIT_SMOKE=1 changes what `from_namespace` returns (what the notebook displays), and nothing
    later: `run` reads no environment switch, so the config shown is the config that runs."""
    monkeypatch.setenv("LORAKIT_SMOKE", "1")
    shown = RunConfig.from_namespace({"lr": 5e-4, "max_steps": 150})
    assert shown == RunConfig(lr=5e-4, max_steps=150).smoke() and shown.max_steps == 4
    monkeypatch.delenv("LORAKIT_SMOKE")
    assert RunConfig.from_namespace({"lr": 5e-4}).max_steps == RunConfig().max_steps
    train_source = (ROOT / "lorakit" / "experiment" / "train.py").read_text()
    assert "SMOKE" not in train_source and "environ" not in train_source


def test_smoke_profile_shrinks_but_keeps_the_protocol():
    cfg = RunConfig().smoke()
    assert cfg.max_steps <= 4 and cfg.max_eval_utterances > 0 and "smoke" in cfg.notes
    assert cfg.rms_target == RunConfig().rms_target and cfg.guardrail == RunConfig().guardrail


@pytest.mark.parametrize("values, steps", [
    ({}, [50, 100, 150]),
    ({"max_steps": 120}, [50, 100, 120]),  # the last step is always evaluated
    ({"eval_steps": "10,20,40,80,150"}, [10, 20, 40, 80, 150]),
    ({"eval_steps": "10, 20,40"}, [10, 20, 40, 150]),
    ({"eval_steps": 30}, [30, 150]),  # papermill's `-p eval_steps 30`
    ({"eval_steps": [5, 25]}, [5, 25, 150]),  # a YAML list
    ({"eval_steps": "geometric:5"}, [9, 19, 38, 75, 150]),
    ({"eval_steps": "geometric:1"}, [150]),
    ({"eval_steps": "geometric:3", "max_steps": 4}, [1, 2, 4]),
])
def test_eval_steps_parse(values, steps):
    assert RunConfig.from_dict(values).eval_step_list() == steps


@pytest.mark.parametrize("values, reason", [
    ({"eval_steps": "20,10"}, "ascending"),
    ({"eval_steps": "10,10,20"}, "ascending"),
    ({"eval_steps": "0,10"}, "between 1 and max_steps"),
    ({"eval_steps": "10,200"}, "between 1 and max_steps"),
    ({"eval_steps": "10,twenty"}, "comma-separated ints"),
    ({"eval_steps": "10.5"}, "comma-separated ints"),
    ({"eval_steps": "geometric:0"}, "N >= 1"),
    ({"eval_steps": "geometric:"}, "N >= 1"),
    ({"eval_steps": "geometric:9"}, "only 8 distinct steps"),
    ({"eval_steps": "geometric:x"}, "comma-separated ints"),
])
def test_bad_eval_steps_are_named(values, reason):
    with pytest.raises(ConfigError, match=f"'eval_steps'.*{reason}"):
        RunConfig.from_dict(values)


def test_the_smoke_profile_keeps_eval_steps_within_its_steps():
    assert RunConfig(eval_steps="10,20,40,80,150").smoke().eval_step_list() == [2, 4]


def test_the_default_recipe_guards_against_forgetting_and_names_its_replay_set(tmp_path):
    """Issue 12's study chose replay 0.25 and the alpha grid as defaults; without the demo's replay set the error says how to get it."""
    from lorakit.params import check_inputs_exist

    cfg = RunConfig()
    assert cfg.replay_per_batch() == 2 and cfg.scale_list() == [1.0, 0.75, 0.5, 0.25]
    with pytest.raises(ConfigError, match=r"replay_manifest.*lorakit demo-data.*replay_ratio 0"):
        check_inputs_exist(RunConfig(replay_manifest=str(tmp_path / "replay.jsonl")))
    check_inputs_exist(RunConfig(replay_manifest=str(tmp_path / "replay.jsonl"), replay_ratio=0.0))  # not used, not needed


def test_a_record_from_before_test_split_counts_as_unsplit(tmp_path):
    """A run recorded before `test_split` existed reported on the clips that chose: resuming it under today's
    default (0.5) would mix full-set and dev-half evaluations in one history, so the guard names the change."""
    from lorakit.files import write_json
    from lorakit.record import check_same_run, config_changes

    old = {k: v for k, v in RunConfig().to_dict().items() if k != "test_split"}
    assert config_changes(RunConfig(), old) == {"test_split": (0.0, 0.5)}
    folder = tmp_path / "old-run"
    write_json(folder / "config.json", {"config": old})
    with pytest.raises(ConfigError, match=r"test_split: 0.0 -> 0.5"):
        check_same_run(RunConfig(), folder)
    check_same_run(RunConfig(test_split=0.0), folder)  # the same run: no error
    check_same_run(RunConfig(), tmp_path / "never-run")  # no record: nothing to compare
