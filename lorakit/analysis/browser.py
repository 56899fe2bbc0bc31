"""Interactive error browser (ipywidgets): pick a run and a manifest, filter by speaker or by
"got worse", select an utterance, hear it, see its spectrogram (the channel: phone band, noise) and
read baseline and tuned hypotheses aligned with the reference.

`error_browser(...)` returns an `ErrorBrowser`. Displayed in JupyterLab it is the live widget;
its display bundle also carries static HTML tables of the changed utterances, each with its
spectrogram (not its audio: a player per row would put megabytes into the notebook), which is what
frontends without a widget manager show: papermill/nbmake outputs, nbconvert, GitHub.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import ipywidgets as widgets
from IPython.display import Audio

from .breakdown import aligned, utterance_changes
from ..display import html_table
from .clips import ClipNote, Spectrogram, clip_view, resolve_audio
from .language_id import flagged_html, run_text_language
from .runs import Run, load_runs
from .stats import PredictionMismatch

PathLike = str | os.PathLike
ALL_SPEAKERS = "(all speakers)"


@dataclass
class _Split:
    """One run's predictions on one manifest, joined with the per-utterance change."""

    run: Run
    split: str
    baseline: dict  # id -> prediction row
    tuned: dict
    changes: list[dict]  # utterance_changes(baseline, best), worst first

    @classmethod
    def load(cls, run: Run, split: str) -> "_Split":
        base, best = run.predictions(split, "baseline"), run.predictions(split, "best")
        return cls(run, split, {r["id"]: r for r in base}, {r["id"]: r for r in best},
                   utterance_changes(base, best))

    def speakers(self) -> list[str]:
        return sorted({str(c["speaker"]) for c in self.changes})

    def select(self, speaker: str = ALL_SPEAKERS, worse_only: bool = False) -> list[dict]:
        return [c for c in self.changes if (speaker == ALL_SPEAKERS or str(c["speaker"]) == speaker)
                and (not worse_only or c["change"] == "worse")]


def utterance_html(data: _Split, uid: str) -> str:
    """Aligned ref/hyp of the baseline and the tuned (best) predictions of one utterance."""
    b, t = data.baseline[uid], data.tuned[uid]
    change = next(c for c in data.changes if c["id"] == uid)
    return (f'<div class="lorakit-utterance"><b>{html.escape(uid)}</b> · speaker '
            f'{html.escape(str(b.get("speaker_id")))} · errors {change["before_errors"]} → '
            f'{change["after_errors"]} ({change["change"]})<br>'
            f'<small>reference: {html.escape(b.get("ref", ""))}</small>'
            f'<div>baseline:</div>{aligned(b["ref_norm"], b["hyp_norm"]).html()}'
            f'<div>tuned (best):</div>{aligned(t["ref_norm"], t["hyp_norm"]).html()}</div>')


def clip_html(data: _Split, uid: str, root: PathLike | None = None) -> str:
    """The utterance's audio player beside its spectrogram, or a note naming the missing file."""
    path, view = _clip(data, uid, root)
    player = Audio(filename=str(path))._repr_html_() if path else ""
    return f'<div style="display:flex;gap:1em;align-items:center">{player}{view.html()}</div>'


def _label(c: dict) -> str:
    mark = {"worse": "▲ worse", "better": "▼ better", "same": "= same"}[c["change"]]
    return f"{c['id']}  [{c['speaker']}]  {c['before_errors']}→{c['after_errors']} errors  {mark}"


def static_tables(splits: Sequence[_Split], max_rows: int = 10, audio_root: PathLike | None = None,
                  spectrograms: bool = True) -> str:
    """HTML: per run and manifest, the utterances that changed most, with aligned ref/hyp and (with
    `spectrograms`) the spectrogram of each clip."""
    if not splits:
        return "<p>No runs with baseline and best predictions to browse.</p>"
    parts = ["<p><i>Static view of the error browser (widgets need a live JupyterLab).</i></p>"]
    for d in splits:
        moved = [c for c in d.changes if c["change"] != "same"]
        shown = sorted(moved, key=lambda c: (-abs(c["delta"]), c["id"]))[:max_rows]
        rows = [{**c, "baseline": aligned(d.baseline[c["id"]]["ref_norm"], d.baseline[c["id"]]["hyp_norm"]),
                 "tuned": aligned(d.tuned[c["id"]]["ref_norm"], d.tuned[c["id"]]["hyp_norm"]),
                 "clip": _clip(d, c["id"], audio_root)[1] if spectrograms else None} for c in shown]
        parts.append(html_table(rows, [("id", "id"), ("speaker", "speaker"), ("change", "change"),
                                       ("delta", "Δ errors"), ("baseline", "baseline"), ("tuned", "tuned")]
                                + ([("clip", "spectrogram")] if spectrograms else []),
                                f"{d.run.run_id} · {d.split}: {len(moved)} utterances changed"
                                + (f" (largest {max_rows} shown)" if len(moved) > max_rows else "")))
        parts.append(flagged_html(d.run.run_id, d.split, list(d.baseline.values()), list(d.tuned.values()),
                                  run_text_language(d.run), max_rows))  # "" when no answer is in another language
    return "\n".join(parts)


def _clip(data: _Split, uid: str, root: PathLike | None) -> tuple[Path | None, Spectrogram | ClipNote]:
    """The utterance's audio file (None when not found) and its spectrogram or a note."""
    written = data.tuned[uid].get("audio_filepath")
    path = resolve_audio(written, data.run, data.split, root)
    return path, clip_view(path, written)


class ErrorBrowser:
    """The widget plus its static fallback; display it, or use `.widget` directly."""

    def __init__(self, runs: Sequence[Run], audio_root: PathLike | None = None, max_static_rows: int = 10,
                 spectrograms: bool = True):
        self.runs = {r.run_id: r for r in runs if r.splits()}
        self.audio_root = audio_root
        self.max_static_rows = max_static_rows
        self.spectrograms = spectrograms  # in the static tables; the live widget draws the selected clip always
        self._cache: dict[tuple[str, str], _Split] = {}
        self.run_choice = widgets.Dropdown(options=list(self.runs), description="run")
        self.split_choice = widgets.Dropdown(description="manifest")
        self.speaker_choice = widgets.Dropdown(description="speaker")
        self.worse_only = widgets.Checkbox(value=False, description="got worse only")
        self.utterances = widgets.Select(description="utterance", rows=10,
                                         layout=widgets.Layout(width="95%"))
        self.utterances.add_class("lorakit-utterances")
        self.detail = widgets.HTML()
        self.detail.add_class("lorakit-detail")
        self.audio = widgets.HTML()  # the clip: IPython.display.Audio's <audio> element and the spectrogram
        self.audio.add_class("lorakit-audio")
        self.run_choice.observe(self._on_run, "value")
        self.split_choice.observe(self._on_split, "value")
        for w in (self.speaker_choice, self.worse_only):
            w.observe(self._refilter, "value")
        self.utterances.observe(self._on_utterance, "value")
        self.widget = widgets.VBox([
            widgets.HBox([self.run_choice, self.split_choice]),
            widgets.HBox([self.speaker_choice, self.worse_only]),
            self.utterances, self.detail, self.audio])
        self.widget.add_class("lorakit-browser")
        if not self.runs:
            self.detail.value = "<p>No runs with baseline and best predictions to browse.</p>"
        self._on_run()

    # -- data
    def data(self, run_id: str, split: str) -> _Split:
        key = (run_id, split)
        if key not in self._cache:
            self._cache[key] = _Split.load(self.runs[run_id], split)
        return self._cache[key]

    def _current(self) -> _Split | None:
        if not self.run_choice.value or not self.split_choice.value:
            return None
        try:
            return self.data(self.run_choice.value, self.split_choice.value)
        except PredictionMismatch as e:  # the matrix reports it too; say it here instead of failing
            self.detail.value = f"<p>{html.escape(self.run_choice.value)}: {html.escape(str(e))}</p>"
            return None

    # -- callbacks
    def _on_run(self, _change=None) -> None:
        run = self.runs.get(self.run_choice.value)
        splits = run.splits() if run else []
        self.split_choice.options = [(f"{s}: {run.manifest_path(s) or '?'}", s) for s in splits]
        self.split_choice.value = splits[0] if splits else None
        self._on_split()

    def _on_split(self, _change=None) -> None:
        data = self._current()
        self.speaker_choice.options = [ALL_SPEAKERS] + (data.speakers() if data else [])
        self.speaker_choice.value = ALL_SPEAKERS
        self._refilter()

    def _refilter(self, _change=None) -> None:
        data = self._current()
        shown = data.select(self.speaker_choice.value or ALL_SPEAKERS, self.worse_only.value) if data else []
        self.utterances.options = [(_label(c), c["id"]) for c in shown]
        self.utterances.value = shown[0]["id"] if shown else None
        if not shown:
            self._show(None)

    def _on_utterance(self, change) -> None:
        self._show(change["new"])

    def _show(self, uid: str | None) -> None:
        self.audio.value = ""
        if uid is None:
            if self._current() is not None:
                self.detail.value = "<p>No utterance matches the filters.</p>"
            return
        data = self._current()
        self.detail.value = utterance_html(data, uid)
        self.audio.value = clip_html(data, uid, self.audio_root)

    # -- display
    def select(self, uid: str) -> None:
        """Select an utterance by id (as clicking it in the list does)."""
        self.utterances.value = uid

    def static_html(self) -> str:
        loaded, problems = [], []
        for run_id, run in self.runs.items():
            for split in run.splits():
                try:
                    loaded.append(self.data(run_id, split))
                except PredictionMismatch as e:
                    problems.append(f"<p>{html.escape(run_id)} · {split}: {html.escape(str(e))}</p>")
        return static_tables(loaded, self.max_static_rows, self.audio_root, self.spectrograms) + "".join(problems)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude) or {}
        bundle["text/html"] = self.static_html()
        return bundle


def error_browser(runs_dir: PathLike, run_ids: Sequence[str] | str | None = None,
                  audio_root: PathLike | None = None, spectrograms: bool = True) -> ErrorBrowser:
    """The error browser over the finished, non-archived runs under `runs_dir` (`spectrograms`: in
    the static tables too, ~0.2 s and ~15 KB of notebook per row)."""
    picked = load_runs(runs_dir, run_ids, include_archived=False)
    return ErrorBrowser([r for r in picked if r.status == "finished"], audio_root, spectrograms=spectrograms)
