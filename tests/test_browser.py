"""The error browser and the analysis notebook: widget behaviour, headless execution with
papermill (static fallback), and a real-browser test (JupyterLab + headless Chromium)."""

import csv
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from fixtures.records import TERMS, copy_runs, write_wavs
from lorakit.analysis import browser, runs

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def project(tmp_path):
    """A throwaway project: executed/ with the fixture runs, WAVs where the predictions point,
    a term list and the analysis notebook."""
    copy_runs(tmp_path / "executed")
    write_wavs(tmp_path)
    shutil.copy(TERMS, tmp_path / "data" / "demo" / "terms.txt")
    (tmp_path / "notebooks").mkdir()
    shutil.copy(NOTEBOOK, tmp_path / "notebooks" / "analysis.ipynb")
    return tmp_path


# ---------------------------------------------------------------------------------------------
# The widget, driven from Python


def test_browser_lists_runs_manifests_and_filters(project):
    b = browser.error_browser(project / "executed", audio_root=project)
    assert list(b.runs) == ["dora-r8-lr5e-5", "lora-r8-lr3e-4"]  # finished, not archived
    assert [v for _, v in b.split_choice.options] == ["domain", "heldout"]
    assert b.speaker_choice.options == (browser.ALL_SPEAKERS, "spk_a", "spk_b", "spk_c")
    assert len(b.utterances.options) == 12 and b.utterances.value == "d12"  # worst change first
    b.worse_only.value = True
    assert [v for _, v in b.utterances.options] == ["d12"]
    b.worse_only.value = False
    b.speaker_choice.value = "spk_a"
    assert [v for _, v in b.utterances.options] == ["d02", "d03", "d04", "d01"]
    b.run_choice.value = "lora-r8-lr3e-4"
    b.split_choice.value = "heldout"
    b.worse_only.value = True
    assert [v for _, v in b.utterances.options] == ["h10", "h03"]
    b.speaker_choice.value = "spk_d"
    assert [v for _, v in b.utterances.options] == ["h03"]
    b.split_choice.value = "domain"  # LoRA made no domain utterance worse
    assert b.utterances.options == () and "No utterance matches" in b.detail.value


def test_selecting_an_utterance_shows_aligned_text_and_audio(project):
    b = browser.error_browser(project / "executed", audio_root=project)
    b.select("d10")
    assert "d10" in b.detail.value and "errors 3 → 0 (better)" in b.detail.value
    assert "REF: switch to" in b.detail.value and "AMOXICILLAN" in b.detail.value  # the baseline's error
    assert "<audio" in b.audio.value and 'src="data:audio/x-wav;base64,' in b.audio.value
    assert '<img class="lorakit-spectrogram" src="data:image/png;base64,' in b.audio.value  # beside the player
    (project / "data" / "demo" / "domain" / "d09.wav").unlink()
    b.select("d09")
    assert "audio not found: data/demo/domain/d09.wav" in b.audio.value
    assert "<audio" not in b.audio.value and "lorakit-spectrogram" not in b.audio.value


def test_audio_paths_resolve_against_the_manifest_folder(project):
    run = runs.load_run(project / "executed" / "dora-r8-lr5e-5")
    clip = project / "data" / "demo" / "domain" / "d01.wav"
    assert browser.resolve_audio(str(clip), run, "domain") == clip  # absolute, as training writes it
    assert browser.resolve_audio("domain/d01.wav", run, "domain", project) == clip  # manifest folder
    assert browser.resolve_audio("data/demo/domain/d01.wav", run, "domain", project) == clip  # root
    assert browser.resolve_audio("nope.wav", run, "domain", project) is None


def test_display_bundle_carries_the_widget_and_static_tables(project):
    bundle = browser.error_browser(project / "executed")._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    html = bundle["text/html"]
    assert "dora-r8-lr5e-5 · domain: 12 utterances changed" in html
    assert "lora-r8-lr3e-4 · heldout: 2 utterances changed" in html
    assert html.count('class="lorakit-aligned"') > 10
    empty = browser.error_browser(project / "nothing-here")
    assert "No runs with baseline and best predictions" in empty._repr_mimebundle_()["text/html"]


def test_static_tables_draw_each_listed_clip(project):
    """Every row of the static tables carries its clip's spectrogram beside the aligned text; a clip
    whose file is gone carries a note naming the path instead."""
    (project / "data" / "demo" / "domain" / "d10.wav").unlink()
    html = browser.error_browser(project / "executed", audio_root=project).static_html()
    rows = html.count("<tr><td")
    assert rows == 10 + 2 + 1 + 2  # at most 10 per run and manifest (fixture: 12, 2, 1, 2 changed)
    notes = html.count("audio not found: data/demo/domain/d10.wav")
    assert notes >= 1  # d10, 3 errors to 0 with DoRA, is listed
    assert html.count('<img class="lorakit-spectrogram" src="data:image/png;base64,') == rows - notes
    lean = browser.error_browser(project / "executed", audio_root=project, spectrograms=False).static_html()
    assert lean.count("<tr><td") == rows and "lorakit-spectrogram" not in lean and "audio not found" not in lean


def test_predictions_that_do_not_pair_are_reported_not_fatal(project):
    best = project / "executed" / "lora-r8-lr3e-4" / "predictions" / "domain_best.jsonl"
    best.write_text("".join(best.read_text().splitlines(keepends=True)[1:]))  # d01 missing
    b = browser.error_browser(project / "executed", audio_root=project)
    assert "lora-r8-lr3e-4 · domain: baseline and tuned predictions cover different utterances" in b.static_html()
    b.run_choice.value = "lora-r8-lr3e-4"
    assert "cover different utterances" in b.detail.value and b.utterances.options == ()
    b.split_choice.value = "heldout"
    assert len(b.utterances.options) == 12


# ---------------------------------------------------------------------------------------------
# The notebook, headless


def _run_notebook(out: Path, **params) -> nbformat.NotebookNode:
    import papermill

    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters=params, kernel_name="python3",
                               progress_bar=False, cwd=str(NOTEBOOK.parent))
    return nbformat.read(out, as_version=4)


def _outputs(nb, mime):
    return [o["data"][mime] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if mime in o.get("data", {})]


def test_notebook_runs_headless_over_fixture_runs(project):
    nb = _run_notebook(project / "out.ipynb", runs_dir=str(project / "executed"),
                       figures_dir=str(project / "figures"), terms_file=str(project / "data/demo/terms.txt"),
                       compare_run_ids="dora-r8-lr5e-5,lora-r8-lr3e-4",
                       archive_run_id="lora-r8-lr1e-3", archive_reason="NaN loss; superseded")
    markdown = "\n".join(_outputs(nb, "text/markdown"))
    # the fixture records predate test_split: they chose on the sets they report, and the verdict says so
    assert "| dora-r8-lr5e-5 |" in markdown and "| accept [provisional: chosen on the reported set] |" in markdown
    assert "| interrupted |" in markdown and "lora-r8-lr1e-3 | 2026-03-01" not in markdown
    assert "NaN loss; superseded" in markdown  # archived by the parameters: in the archive table
    assert "_No run checked its labels (`-p label_check report`) or replayed pseudo-labelled audio._" in markdown
    for name in ("run_matrix.md", "run_matrix.csv", "run_archive.md"):
        assert (project / "executed" / name).is_file()
    assert "lora-r8-lr1e-3" not in (project / "executed" / "run_matrix.md").read_text()
    figures = {p.name for p in (project / "figures").iterdir()}
    for stem in ("deltas", "curves_dora-r8-lr5e-5", "breakdown_dora-r8-lr5e-5_domain",
                 "compare_lr_dora-r8-lr5e-5_dora-r8-lr1e-4", "compare_dora-r8-lr5e-5_lora-r8-lr3e-4"):
        assert {f"{stem}.png", f"{stem}.svg"} <= figures
    assert len(_outputs(nb, "image/png")) >= 10
    html = "\n".join(_outputs(nb, "text/html"))
    assert "Static view of the error browser" in html  # what a frontend without widgets shows
    assert "Domain terms, highest tuned error rate first" in html


def test_notebook_runs_with_no_runs_yet(tmp_path):
    nb = _run_notebook(tmp_path / "out.ipynb", runs_dir=str(tmp_path / "executed"),
                       figures_dir=str(tmp_path / "figures"))
    streams = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "No run records under" in streams
    assert not (tmp_path / "executed").exists()  # nothing written where there is nothing to report


# ---------------------------------------------------------------------------------------------
# The notebook in a real browser


def _chromium() -> Path:
    """Debian's chromium, installed on first use (as `make test` does); skip only if impossible."""
    if not CHROMIUM.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            try:
                subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)
            except (OSError, subprocess.SubprocessError) as e:
                pytest.skip(f"chromium is not installed and `{' '.join(cmd)}` failed: {e}")
    return CHROMIUM


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"], check=True, timeout=600)
        from playwright.sync_api import sync_playwright
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer at {url}")


@pytest.mark.browser
def test_error_browser_in_jupyterlab_with_headless_chromium(project, tmp_path_factory):
    chromium = _chromium()
    sync_playwright = _playwright()
    port, token = _free_port(), secrets.token_hex(16)
    home = tmp_path_factory.mktemp("jupyter_home")
    env = {**os.environ, "LORAKIT_ROOT": str(project), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings")}
    labconfig = home / "config" / "labconfig"
    labconfig.mkdir(parents=True)  # no "Jupyter news?" toast over the screenshot
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={project}", "--ServerApp.terminals_enabled=False",
         "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        env=env, stdout=subprocess.DEVNULL, stderr=open(home / "lab.log", "w"))
    screenshot = ROOT / "figures" / "browser_test.png"
    screenshot.parent.mkdir(exist_ok=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", lab)
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(home / "chromium"), executable_path=str(chromium), headless=True,
                viewport={"width": 1400, "height": 1000},
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = context.new_page()
            try:
                page.goto(f"{base}/lab/tree/notebooks/analysis.ipynb?token={token}")
                page.wait_for_function(
                    "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                    " && window.jupyterapp.shell.currentWidget.sessionContext"
                    " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                    " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                    " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                    timeout=60_000)
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                select = page.locator(".lorakit-utterances select")
                select.wait_for(state="visible", timeout=90_000)
                label = next(o for o in select.locator("option").all_inner_texts() if o.startswith("d10"))
                select.select_option(label=label)
                detail = page.locator(".lorakit-detail")
                detail.filter(has_text="errors 3 → 0").wait_for(timeout=30_000)
                text = detail.inner_text()
                assert "REF: switch to" in text and "HYP: switch to" in text and "AMOXICILLAN" in text
                audio = page.locator(".lorakit-audio audio")
                audio.wait_for(state="attached", timeout=30_000)
                assert audio.count() == 1
                assert page.locator(".lorakit-audio audio source").get_attribute("src").startswith("data:audio/x-wav;base64,")
                # the player has decoded the clip: it can be played
                page.wait_for_function("() => document.querySelector('.lorakit-audio audio').duration > 0.2",
                                       timeout=15_000)
                page.locator(".lorakit-browser").evaluate("el => el.scrollIntoView({block: 'start'})")
            finally:
                page.screenshot(path=str(screenshot))
                context.close()
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
    assert screenshot.stat().st_size > 10_000


@pytest.mark.slow  # the two training runs: ~45 s on an idle 2-core machine, minutes under load
def test_notebook_over_real_runs_from_this_session(tiny_cfg, tmp_path):
    """Two tiny real runs (LoRA and DoRA) written by lorakit.run, analysed by the notebook."""
    from lorakit import RunConfig, run

    out = Path(tiny_cfg["output_dir"])
    small = {**tiny_cfg, "max_steps": 2, "max_eval_utterances": 8, "max_train_utterances": 8, "min_train_clips": 4}
    run(RunConfig(**small, run_id="real-lora"))
    run(RunConfig(**small, use_dora=True, run_id="real-dora"))
    nb = _run_notebook(tmp_path / "out.ipynb", runs_dir=str(out), figures_dir=str(tmp_path / "figures"),
                       n_resamples=200)
    rows = {r["Run ID"]: r for r in csv.DictReader(open(out / "run_matrix.csv", newline=""))}
    assert set(rows) == {"real-lora", "real-dora"}
    for r in rows.values():
        assert r["Status"] == "finished" and r["Baseline WER"] and r["Tuned WER"]
        assert r["Domain CI low"] and r["Verdict"].split(" ")[0] in ("accept", "reject", "inconclusive")
    assert (rows["real-lora"]["Adapter"], rows["real-dora"]["Adapter"]) == ("LoRA", "DoRA")
    assert (tmp_path / "figures" / "curves_real-dora.png").is_file()
    assert "compare_use_dora_" in " ".join(p.name for p in (tmp_path / "figures").iterdir())
    assert "Static view of the error browser" in "\n".join(_outputs(nb, "text/html"))
