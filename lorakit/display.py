"""What the kit shows a person: progress bars, the number formats of its tables (WER, points,
learning rates), and the two table renderers (Markdown for records and terminals, HTML for notebooks).
One place, so a WER reads the same in the matrix, the parity report, the CLI and the error browser.
Imports nothing from lorakit but `env`; no torch.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

from .env import progress_as_text


def progress_bar(*args: Any, **kwargs: Any):
    """tqdm: text bars when this process's output streams to a terminal (`lorakit run` executing the
    notebook sets LORAKIT_PROGRESS=text for its kernel), else tqdm.auto's choice (widgets in JupyterLab)."""
    if progress_as_text():
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(*args, **kwargs)


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
