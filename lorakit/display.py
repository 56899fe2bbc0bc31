"""What the kit shows a person: progress bars (and, for a run in a notebook kernel, their lines on the
terminal that started it: plain papermill shows nothing else), the number formats of its tables (WER, points,
learning rates), and the two table renderers (Markdown for records and terminals, HTML for notebooks).
One place, so a WER reads the same in the matrix, the parity report, the CLI and the error browser.
Imports nothing from lorakit but `env`; no torch.
"""

from __future__ import annotations

import functools
import html
import io
import sys
import time
from contextlib import contextmanager
from typing import IO, Any, Iterable, Iterator, Sequence

from .env import progress_as_text, progress_to_terminal

TERMINAL_INTERVAL_S = 20.0  # seconds between two terminal lines of one progress bar (its first and last always)


class _Terminal:
    """Where a run's progress lines go while `progress_to_kernel_terminal` holds (None: nowhere)."""

    file: IO[str] | None = None
    first = True  # papermill's bar usually holds the line when the run's first line comes


def progress_bar(*args: Any, **kwargs: Any):
    """tqdm: text bars when this process's output streams to a terminal (`lorakit run` executing the
    notebook sets LORAKIT_PROGRESS=text for its kernel), else tqdm.auto's choice (widgets in JupyterLab),
    which also writes a line to the kernel's terminal every TERMINAL_INTERVAL_S while a run mirrors there."""
    if progress_as_text():
        from tqdm.std import tqdm

        return tqdm(*args, **kwargs)
    from tqdm.auto import tqdm

    return _mirrored(tqdm)(*args, **kwargs) if _Terminal.file is not None else tqdm(*args, **kwargs)


@functools.cache
def _mirrored(base: type) -> type:
    """`base` (tqdm.auto's class) whose every refresh may also write one plain line to the terminal."""

    class Mirrored(base):  # type: ignore[misc, valid-type]
        _last_line = float("-inf")  # class defaults: tqdm's __init__ displays before it returns
        _closed = False

        def display(self, *args: Any, **kwargs: Any) -> Any:
            shown = super().display(*args, **kwargs)
            if not self._closed and time.monotonic() - self._last_line >= TERMINAL_INTERVAL_S:
                self._terminal_line()
            return shown

        def close(self) -> None:
            if not self.disable and not self._closed:
                self._closed = True
                self._terminal_line()  # the final count, however recent the last line
            super().close()

        def _terminal_line(self) -> None:
            self._last_line = time.monotonic()
            terminal_line(self.format_meter(**{**self.format_dict, "ncols": 0}))  # stats only, no bar glyphs

    return Mirrored


def terminal_line(line: str) -> None:
    """One line on the kernel's terminal while a run mirrors there (`progress_to_kernel_terminal`); else nothing."""
    terminal = _Terminal.file
    if terminal is None:
        return
    # papermill's own bar ("Executing: 67%|...") holds the line: on a terminal clear it (papermill redraws it
    # after the cell), in a log file start the run's first line on a line of its own
    start = "\r\x1b[K" if terminal.isatty() else "\n" if _Terminal.first else ""
    _Terminal.first = False
    try:
        terminal.write(start + line.rstrip("\n") + "\n")
        terminal.flush()
    except (OSError, ValueError):  # the terminal went away (closed pipe): the notebook still has everything
        _Terminal.file = None


class _EchoLines:
    """The kernel's stdout echo: what the run prints reaches the terminal line by line (`terminal_line`)."""

    def __init__(self) -> None:
        self.pending = ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            terminal_line(line)
        return len(text)

    def flush(self) -> None:  # a partial line waits for its end (a print's "\n" comes as a second write)
        pass


def _terminal_fd() -> int:
    """The kernel's terminal: the descriptor ipykernel kept when it redirected fd 2 into the notebook, or fd 2
    itself where it did not redirect it (it watches no descriptor under pytest, for one: then `fileno()` refuses)."""
    try:
        return sys.stderr.fileno()
    except io.UnsupportedOperation:
        return sys.__stderr__.fileno()


@contextmanager
def progress_to_kernel_terminal(enabled: bool = True) -> Iterator[None]:
    """While a run executes in a notebook kernel whose output nothing streams (plain `papermill`, JupyterLab,
    nbmake; LORAKIT_PROGRESS unset), its printed status lines and a line per progress bar every
    TERMINAL_INTERVAL_S also reach the terminal the kernel was started from (its stderr); the notebook's
    output is unchanged. ipykernel keeps that terminal's descriptor as the streams' `fileno()` (for
    subprocesses) and echoes what is written to a stream to its `echo` file. Outside a kernel, under
    `lorakit run` (LORAKIT_PROGRESS text or notebook) or with `enabled` False (ranks > 0): nothing changes."""
    out = sys.stdout
    if not (enabled and progress_to_terminal() and hasattr(out, "echo") and _Terminal.file is None):
        yield
        return
    try:
        terminal = open(_terminal_fd(), "w", buffering=1, closefd=False)  # noqa: SIM115 -- closed below
    except (OSError, ValueError, AttributeError):  # a stream without a descriptor: no terminal to reach
        yield
        return
    echo = _EchoLines()
    before, out.echo, _Terminal.file, _Terminal.first = out.echo, echo, terminal, True
    try:
        yield
    finally:
        out.flush()  # what the run printed last, through the echo while the terminal is still there
        if echo.pending:
            terminal_line(echo.pending)
        out.echo, _Terminal.file = before, None
        terminal.close()


def format_lr(lr: float | None, exponent_digits: int = 1) -> str:
    """A learning rate in exponent form: 1e-05 -> '1e-5', 0.00025 -> '2.5e-4' (the old team's table);
    `exponent_digits=2` keeps Python's style ('5e-05'), which sweep run ids use."""
    if lr is None:
        return ""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent if exponent_digits == 2 else int(exponent)}"


def format_wer(wer: float | None, percent: bool = False) -> str:
    """A WER (a fraction) as a table cell: '0.1831', or '18.31' / '18.31%' in percent; '' when missing."""
    if wer is None:
        return ""
    return f"{wer * 100:.2f}%" if percent else f"{wer:.4f}"


def format_pts(delta: float | None, low: float | None = None, high: float | None = None) -> str:
    """A WER change in points with its interval: '-18.17 [-19.80, -16.52]'; '' when missing."""
    if delta is None:
        return ""
    return f"{delta:+.2f}" + ("" if low is None else f" [{low:+.2f}, {high:+.2f}]")


def format_value(v: Any) -> str:
    """A plain cell: floats to 4 decimals, None empty, anything else as str."""
    if v is None:
        return ""
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def markdown_table(rows: Iterable[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub Markdown table of `rows` under `columns` ((key, header) pairs); `|` and newlines inside
    cells are escaped, None is an empty cell."""
    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def html_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]], caption: str = "") -> str:
    """A plain HTML table; values that render themselves (aligned text, a clip's spectrogram or note:
    anything with an `.html()` method) are embedded as their HTML, the rest escaped (`format_value`)."""
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for _, h in columns)
    body = []
    for r in rows:
        cells = [v.html() if hasattr(v := r.get(k), "html") else html.escape(format_value(v)) for k, _ in columns]
        body.append("<tr>" + "".join(f"<td style='text-align:left'>{c}</td>" for c in cells) + "</tr>")
    cap = f"<caption style='text-align:left'><b>{html.escape(caption)}</b></caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
