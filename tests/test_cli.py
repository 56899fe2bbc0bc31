"""The `lorakit` command line's conventions (issue 25): a user's mistake is one line on stderr and exit
code 2, never a traceback; counts are >= 1; `--jobs` and `--ray` exclude each other; `--version`;
`--help` for every subcommand; `archive` / `unarchive`; `--runs` relative to the project root, and
`analysis --runs X` writes beside X. Through `python -m lorakit ...` as a user types it, or `cli.main`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.records import copy_runs

import lorakit
from lorakit import cli
from lorakit.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
LORA = "lora-r8-lr3e-4"  # a finished run of the fixture records (tests/fixtures/runs)


def lorakit_cmd(*args: str, root: Path = ROOT, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "LORAKIT_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "lorakit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code 2, nothing on stdout, one line on stderr holding `words`, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def project(tmp_path) -> Path:
    """A project root (params/default.yaml) with the fixture run records in executed/."""
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "default.yaml").write_text((ROOT / "params" / "default.yaml").read_text())
    copy_runs(tmp_path / "executed")
    return tmp_path


def test_version():
    proc = lorakit_cmd("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"lorakit {lorakit.__version__}"


SUBCOMMANDS = ["run", "sweep", "search", "matrix", "archive", "unarchive", "analysis", "demo-data", "real-speech",
               "import-model", "transcribe", "export"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert f"usage: lorakit {command}" in capsys.readouterr().out


def test_the_subcommand_list_is_the_parsers():
    """SUBCOMMANDS above is every command `lorakit --help` lists (a new one gets its --help checked)."""
    proc = lorakit_cmd("--help")
    listed = proc.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert proc.returncode == 0 and listed == SUBCOMMANDS


@pytest.mark.parametrize("args, words", [
    (["sweep", "params/sweeps/x.yaml", "--jobs", "2", "--ray", "auto"], ["lorakit sweep", "--ray", "not allowed with", "--jobs"]),
    (["search", "params/search/x.yaml", "--jobs", "2", "--ray", "auto"], ["lorakit search", "not allowed with"]),
    (["sweep", "params/sweeps/x.yaml", "--jobs", "0"], ["lorakit sweep", "--jobs", ">= 1, got 0"]),
    (["search", "params/search/x.yaml", "--jobs", "0"], ["lorakit search", "--jobs", ">= 1, got 0"]),
    (["search", "params/search/x.yaml", "--trials", "0"], ["lorakit search", "--trials", ">= 1, got 0"]),
    (["search", "params/search/x.yaml", "--trials", "two"], ["--trials", "got 'two'"]),
    (["transcribe", "a.wav", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    (["demo-data", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["demo-data", "--language", "de"], ["lorakit demo-data", "--language", "invalid choice: 'de'"]),
    (["demo-data", "--n-train", "many"], ["lorakit demo-data", "--n-train", "invalid int value: 'many'"]),
])
def test_usage_errors_are_one_line(args, words):
    assert_one_line_error(lorakit_cmd(*args), *words, "--help")


def test_demo_data_declares_the_builders_options(capsys):
    """`lorakit demo-data` is an argparse subcommand like the others (it used to hand its arguments to the
    builders unread): --help lists both scenarios' options, and a size the chosen scenario has not (the French
    one trains on --n-train-domain-only) is refused in one line before any audio is synthesized."""
    with pytest.raises(SystemExit) as done:
        cli.main(["demo-data", "--help"])
    shown = capsys.readouterr().out
    assert done.value.code == 0
    for option in ("--language {en,fr}", "--out", "--seed", "--jobs", "--force", "--n-train N", "--n-train-domain-only",
                   "--n-domain N", "--n-heldout N", "--n-replay N", "--n-domain-dev", "--n-heldout-dev"):
        assert option in shown, option
    assert "(default en 240, fr 300)" in " ".join(shown.split())  # each scenario's own default size
    line = assert_one_line_error(lorakit_cmd("demo-data", "--language", "fr", "--n-train", "5"), "lorakit demo-data")
    assert line == ("lorakit demo-data: --n-train: not a size of the --language fr corpus (it takes --n-train-domain-only, "
                    "--n-domain, --n-heldout, --n-replay, --n-domain-dev, --n-heldout-dev)")


def test_launchers_refuse_bad_counts_when_called_as_functions():
    """The same checks for a caller of the library (a notebook, a script): a ConfigError naming the option,
    before any file is read (`--trials 0` used to mean the file's count, `--jobs 0` a ZeroDivisionError)."""
    from lorakit.launch.search import run_search
    from lorakit.launch.sweep import run_sweep

    with pytest.raises(ConfigError, match="--jobs 2 and --ray auto: choose one"):
        run_sweep("params/sweeps/none.yaml", jobs=2, ray_address="auto")
    with pytest.raises(ConfigError, match="--jobs 0: an integer >= 1"):
        run_sweep("params/sweeps/none.yaml", jobs=0)
    with pytest.raises(ConfigError, match="--trials 0: an integer >= 1"):
        run_search("params/search/none.yaml", trials=0)
    with pytest.raises(ConfigError, match="--jobs 0: an integer >= 1"):
        run_search("params/search/none.yaml", jobs=0)


def test_archive_and_unarchive_from_another_folder_resolve_runs_against_the_project(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # the cwd is not the project: `--runs executed` is the project's
    proc = lorakit_cmd("archive", LORA, "--reason", "superseded by the DoRA runs", root=project, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"archived {LORA}: superseded by the DoRA runs"
    assert json.loads((project / "executed" / LORA / "ARCHIVED").read_text())["reason"] == "superseded by the DoRA runs"
    assert not (elsewhere / "executed").exists()

    proc = lorakit_cmd("matrix", root=project, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert LORA not in (project / "executed" / "run_matrix.md").read_text()
    assert LORA in (project / "executed" / "run_archive.md").read_text()

    proc = lorakit_cmd("unarchive", LORA, root=project, cwd=elsewhere)
    assert proc.returncode == 0 and "unarchived" in proc.stdout, proc.stderr
    assert not (project / "executed" / LORA / "ARCHIVED").exists()
    assert lorakit_cmd("matrix", root=project, cwd=elsewhere).returncode == 0
    assert LORA in (project / "executed" / "run_matrix.md").read_text()


@pytest.mark.parametrize("args, words", [
    (["archive", LORA, "--reason", " "], ["lorakit archive", "needs a reason"]),
    (["archive", "no-such-run", "--reason", "x"], ["lorakit archive", "no run folder", "no-such-run"]),
    (["unarchive", LORA], ["lorakit unarchive", "is not archived"]),
    (["matrix", "--runs", "nowhere"], ["lorakit matrix", "--runs nowhere", "no folder"]),
    (["analysis", "--runs", "nowhere"], ["lorakit analysis", "--runs nowhere"]),
    (["import-model", "/no/such/ct2-folder"], ["lorakit import-model", "CTranslate2 Whisper export folder (no model.bin)"]),
    (["run", "params/no-such-recipe.yaml"], ["lorakit run", "no-such-recipe.yaml"]),
])
def test_user_errors_are_one_line(project, args, words):
    assert_one_line_error(lorakit_cmd(*args, root=project, cwd=project), *words)


def test_analysis_writes_its_notebook_beside_the_runs_it_reads(project, monkeypatch):
    """`analysis --runs X` (relative to the project root): X/analysis.ipynb and X/figures/, so another
    folder's analysis never replaces executed/analysis.ipynb or the project's figures/. The notebook's own
    execution is tested elsewhere (tests/test_browser.py, the sweep tests): here what the command asks of it."""
    from lorakit.launch import notebooks

    calls = []
    monkeypatch.setattr(notebooks, "execute_analysis", lambda output, params: calls.append((output, params)) or True)
    monkeypatch.setenv("LORAKIT_ROOT", str(project))
    monkeypatch.chdir(project.parent)
    (project / "sweeps" / "lr").mkdir(parents=True)
    assert cli.main(["analysis", "--runs", "sweeps/lr"]) == 0
    assert cli.main(["analysis"]) == 0
    assert calls == [(project / "sweeps" / "lr" / "analysis.ipynb",
                      {"runs_dir": str(project / "sweeps" / "lr"), "figures_dir": str(project / "sweeps" / "lr" / "figures")}),
                     (project / "executed" / "analysis.ipynb", {"runs_dir": str(project / "executed")})]


def test_plain_papermill_shows_a_runs_progress_lines_on_its_terminal(tmp_path):
    """What `progress_to_kernel_terminal` does for `papermill notebooks/train.ipynb ...` (whose full smoke run
    tests/test_notebooks.py checks the same way), on a two-cell notebook: papermill prints no cell output,
    yet the printed status line and the bar's lines reach its stderr, and the notebook's outputs are unchanged."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("from lorakit.display import progress_bar, progress_to_kernel_terminal"),
                nbformat.v4.new_code_cell("with progress_to_kernel_terminal():\n    print('baseline domain: WER 0.5000')\n"
                                          "    for _ in progress_bar(range(3), desc='train'):\n        pass\nprint('after the run')")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    # as a user's shell has it: ipykernel redirects no descriptor while PYTEST_CURRENT_TEST is set (the full run
    # in tests/test_notebooks.py takes that path: fd 2 itself)
    env = {k: v for k, v in os.environ.items() if k not in ("LORAKIT_PROGRESS", "PYTEST_CURRENT_TEST")}
    proc = subprocess.run([str(Path(sys.executable).with_name("papermill")), "in.ipynb", "out.ipynb"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert "baseline domain: WER 0.5000" in lines and "train: 100% 3/3" in [line.split(" [")[0] for line in lines]
    assert "after the run" not in proc.stderr  # only while a run mirrors
    outputs = nbformat.read(tmp_path / "out.ipynb", 4).cells[1].outputs
    assert [o.get("text") for o in outputs if o.output_type == "stream"] == ["baseline domain: WER 0.5000\n", "after the run\n"]
