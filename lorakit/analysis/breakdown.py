"""Error breakdowns from jiwer's word alignments over the normalized text (`ref_norm`, `hyp_norm`):
substitutions/deletions/insertions, word confusions, aligned ref/hyp, WER per speaker, term
error rates, and which utterances got better or worse between two prediction sets.

Everything takes prediction rows as written in `predictions/<split>_<tag>.jsonl`.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import jiwer

from ..display import format_value, html_table
from ..scoring import normalize_term, utterance_errors
from .clips import clip_view, resolve_audio
from .runs import Run, select_runs
from .stats import pair_predictions

GAP = "*"  # marks the missing side of a deletion or insertion in aligned text
_OP_CODE = {"equal": " ", "substitute": "S", "delete": "D", "insert": "I"}


def align(rows: Sequence[dict]) -> jiwer.WordOutput:
    """jiwer's word alignment of `ref_norm` against `hyp_norm`, one entry per row."""
    return jiwer.process_words([r["ref_norm"] for r in rows], [r["hyp_norm"] for r in rows])


def _wer(errors: int, ref_words: int) -> float | None:
    return errors / ref_words if ref_words else None


def error_counts(rows: Sequence[dict]) -> dict:
    """Corpus totals: sub, del, ins, hits, ref_words, errors and wer (a fraction)."""
    if not rows:
        return {"sub": 0, "del": 0, "ins": 0, "hits": 0, "ref_words": 0, "errors": 0, "wer": None}
    out = align(rows)
    total = {"sub": out.substitutions, "del": out.deletions, "ins": out.insertions, "hits": out.hits,
             "ref_words": sum(len(r) for r in out.references)}
    total["errors"] = total["sub"] + total["del"] + total["ins"]
    total["wer"] = _wer(total["errors"], total["ref_words"])
    return total


def confusions(rows: Sequence[dict], top: int = 15) -> list[dict]:
    """Most frequent word errors: (ref, hyp, count, kind); a deletion has hyp `*`, an insertion ref `*`."""
    if not rows:
        return []
    out = align(rows)
    counts: Counter = Counter()
    for i, chunks in enumerate(out.alignments):
        ref, hyp = out.references[i], out.hypotheses[i]
        for c in chunks:
            if c.type == "substitute":
                for r, h in zip(ref[c.ref_start_idx:c.ref_end_idx], hyp[c.hyp_start_idx:c.hyp_end_idx]):
                    counts[(r, h, "S")] += 1
            elif c.type == "delete":
                counts.update((r, GAP, "D") for r in ref[c.ref_start_idx:c.ref_end_idx])
            elif c.type == "insert":
                counts.update((GAP, h, "I") for h in hyp[c.hyp_start_idx:c.hyp_end_idx])
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [{"ref": r, "hyp": h, "kind": k, "count": n} for (r, h, k), n in ranked]


# ---------------------------------------------------------------------------------------------
# Aligned display


@dataclass(frozen=True)
class AlignedText:
    """Word-aligned ref and hyp in fixed-width columns; errors uppercase, gaps as `*`."""

    columns: tuple  # (ref word, hyp word, op) with op in " SDI"

    def lines(self) -> tuple[str, str, str]:
        widths = [max(len(r), len(h)) for r, h, _ in self.columns]
        ref = " ".join(r.ljust(w) for (r, _, _), w in zip(self.columns, widths))
        hyp = " ".join(h.ljust(w) for (_, h, _), w in zip(self.columns, widths))
        ops = " ".join(o.ljust(w) for (_, _, o), w in zip(self.columns, widths))
        return ref.rstrip(), hyp.rstrip(), ops.rstrip()

    def text(self) -> str:
        ref, hyp, ops = self.lines()
        return f"REF: {ref}\nHYP: {hyp}\n     {ops}".rstrip()

    def html(self) -> str:
        """`<pre>` block with each error coloured by kind (S orange, D red, I blue)."""
        colours = {"S": "#c75c00", "D": "#c00000", "I": "#1f5fbf"}
        widths = [max(len(r), len(h)) for r, h, _ in self.columns]
        parts = {"REF": [], "HYP": []}
        for (r, h, op), w in zip(self.columns, widths):
            for side, word in (("REF", r), ("HYP", h)):
                cell = html.escape(word.ljust(w))
                if op != " ":
                    cell = f'<span style="color:{colours[op]};font-weight:bold" title="{op}">{cell}</span>'
                parts[side].append(cell)
        return ('<pre class="lorakit-aligned" style="margin:0">'
                f'REF: {" ".join(parts["REF"])}\nHYP: {" ".join(parts["HYP"])}</pre>')


def aligned(ref_norm: str, hyp_norm: str) -> AlignedText:
    """Align one normalized ref/hyp pair for display."""
    out = jiwer.process_words([ref_norm], [hyp_norm])
    ref, hyp = out.references[0], out.hypotheses[0]
    cols = []
    for c in out.alignments[0]:
        r_words, h_words = ref[c.ref_start_idx:c.ref_end_idx], hyp[c.hyp_start_idx:c.hyp_end_idx]
        op = _OP_CODE[c.type]
        if c.type == "equal":
            cols += [(r, h, op) for r, h in zip(r_words, h_words)]
        elif c.type == "substitute":
            cols += [(r.upper(), h.upper(), op) for r, h in zip(r_words, h_words)]
        elif c.type == "delete":
            cols += [(r.upper(), GAP * len(r), op) for r in r_words]
        else:
            cols += [(GAP * len(h), h.upper(), op) for h in h_words]
    return AlignedText(tuple(cols))


# ---------------------------------------------------------------------------------------------
# Per speaker, per utterance


def speaker_wer(rows: Sequence[dict]) -> list[dict]:
    """WER per speaker (pooled over the speaker's utterances), worst first."""
    per: dict[str, dict] = {}
    for r, c in zip(rows, utterance_table(rows)):
        s = per.setdefault(str(r.get("speaker_id")), {"speaker": str(r.get("speaker_id")),
                                                      "utterances": 0, "ref_words": 0, "errors": 0})
        s["utterances"] += 1
        s["ref_words"] += c["ref_words"]
        s["errors"] += c["errors"]
    for s in per.values():
        s["wer"] = _wer(s["errors"], s["ref_words"])
    return sorted(per.values(), key=lambda s: (-(s["wer"] or 0), s["speaker"]))


def utterance_table(rows: Sequence[dict]) -> list[dict]:
    """Per utterance: id, speaker, sub/del/ins/hits, ref_words, errors and wer, counted from the
    normalized texts by `record.utterance_errors` (the same count the evaluation stored)."""
    res = []
    for r in rows:
        c = utterance_errors(r["ref_norm"], r["hyp_norm"])
        res.append({"id": r["id"], "speaker": r.get("speaker_id"), "sub": c["sub"], "del": c["del"], "ins": c["ins"],
                    "hits": c["ref_words"] - c["sub"] - c["del"], "ref_words": c["ref_words"], "errors": c["errors"],
                    "wer": _wer(c["errors"], c["ref_words"])})
    return res


def worst_utterances(rows: Sequence[dict], n: int = 10) -> list[dict]:
    """The `n` utterances with the highest WER (more errors first on ties), with aligned text and
    the audio path the predictions wrote."""
    per = utterance_table(rows)
    by_id = {r["id"]: r for r in rows}
    ranked = sorted((u for u in per if u["errors"]), key=lambda u: (-(u["wer"] or float("inf")),
                                                                    -u["errors"], u["id"]))[:n]
    return [{**u, "aligned": aligned(by_id[u["id"]]["ref_norm"], by_id[u["id"]]["hyp_norm"]),
             "audio_filepath": by_id[u["id"]].get("audio_filepath")} for u in ranked]


def utterance_changes(before: Sequence[dict], after: Sequence[dict]) -> list[dict]:
    """Per utterance error change from `before` to `after` (joined on id; ids must match).

    `delta` = after errors - before errors: negative got better, positive got worse. Sorted
    worst change first.
    """
    pairs = pair_predictions(before, after)
    b_err = {u["id"]: u for u in utterance_table([b for b, _ in pairs])}
    a_err = {u["id"]: u for u in utterance_table([a for _, a in pairs])}
    rows = []
    for b, a in pairs:
        eb, ea = b_err[b["id"]], a_err[b["id"]]
        rows.append({"id": b["id"], "speaker": b.get("speaker_id"), "ref_words": eb["ref_words"],
                     "before_errors": eb["errors"], "after_errors": ea["errors"],
                     "delta": ea["errors"] - eb["errors"],
                     "change": "worse" if ea["errors"] > eb["errors"] else
                               "better" if ea["errors"] < eb["errors"] else "same"})
    return sorted(rows, key=lambda r: (-r["delta"], r["id"]))


def change_summary(changes: Sequence[dict]) -> dict:
    """How many utterances got better, worse, or stayed; and the net error change."""
    out = {k: sum(1 for c in changes if c["change"] == k) for k in ("better", "worse", "same")}
    out["net_errors"] = sum(c["delta"] for c in changes)
    return out


# ---------------------------------------------------------------------------------------------
# Domain terms


def read_terms(path: str | Path | None, normalize: Callable[[str], str] = normalize_term) -> list[str]:
    """One term per line (blank lines and `#` comments skipped); [] when the file is absent."""
    if not path or not Path(path).is_file():
        return []
    terms = []
    for line in Path(path).read_text().splitlines():
        t = normalize(line.split("#", 1)[0])
        if t and t not in terms:
            terms.append(t)
    return terms


def term_errors(rows: Sequence[dict], terms: Sequence[str],
                normalize: Callable[[str], str] = normalize_term) -> list[dict]:
    """For each term found in the references: occurrences, misses, error rate, and what the
    hypothesis said instead (most common first). A term occurrence is recognized only when every
    word of it is aligned as equal with no insertion inside it. Highest error rate first."""
    if not rows or not terms:
        return []
    out = align(rows)
    stats = {t: {"term": t, "occurrences": 0, "misses": 0, "heard_as": Counter()} for t in terms}
    by_first_word: dict[str, list[tuple[str, list[str]]]] = {}  # a few hundred terms: look up, don't scan
    for term in terms:
        words = normalize(term).split()
        if words:
            by_first_word.setdefault(words[0], []).append((term, words))
    for i, chunks in enumerate(out.alignments):
        ref, hyp = out.references[i], out.hypotheses[i]
        ok = [False] * len(ref)
        to_hyp: dict[int, int] = {}
        inserted_before: dict[int, list[int]] = {}
        for c in chunks:
            if c.type in ("equal", "substitute"):
                for k in range(c.ref_end_idx - c.ref_start_idx):
                    ok[c.ref_start_idx + k] = c.type == "equal"
                    to_hyp[c.ref_start_idx + k] = c.hyp_start_idx + k
            elif c.type == "insert":
                inserted_before.setdefault(c.ref_start_idx, []).extend(range(c.hyp_start_idx, c.hyp_end_idx))
        for start, word in enumerate(ref):
            for term, words in by_first_word.get(word, ()):
                k = len(words)
                if ref[start:start + k] != words:
                    continue
                s = stats[term]
                s["occurrences"] += 1
                inside = [h for j in range(start + 1, start + k) for h in inserted_before.get(j, [])]
                if all(ok[start:start + k]) and not inside:
                    continue
                s["misses"] += 1
                hyp_idx = sorted(inside + [to_hyp[j] for j in range(start, start + k) if j in to_hyp])
                s["heard_as"][" ".join(hyp[hyp_idx[0]:hyp_idx[-1] + 1]) if hyp_idx else GAP] += 1
    found = [s for s in stats.values() if s["occurrences"]]
    for s in found:
        s["rate"] = s["misses"] / s["occurrences"]
        s["heard_as"] = [h for h, _ in s["heard_as"].most_common(3)]
    return sorted(found, key=lambda s: (-s["rate"], -s["occurrences"], s["term"]))


# ---------------------------------------------------------------------------------------------
# One run's report


@dataclass
class RunBreakdown:
    """Baseline-vs-best breakdown of one run on one split; renders as HTML in a notebook."""

    run_id: str
    split: str
    baseline: dict  # error_counts
    tuned: dict
    speakers: list[dict]  # speaker, baseline_wer, tuned_wer, ...
    confusions: list[dict]  # of the tuned predictions
    worst: list[dict]  # worst tuned utterances with aligned text and audio (the resolved file or None)
    changes: list[dict]  # utterance_changes(baseline, best)
    terms: list[dict] = field(default_factory=list)  # term, occurrences, baseline_rate, tuned_rate
    spectrograms: bool = True  # draw each worst utterance's clip beside its aligned text

    def summary(self) -> dict:
        return change_summary(self.changes)

    def _repr_html_(self) -> str:
        return breakdown_html(self)

    def __repr__(self) -> str:
        return f"RunBreakdown({self.run_id}, {self.split}: WER {format_value(self.baseline['wer'])} -> {format_value(self.tuned['wer'])})"


def run_breakdown(run: Run, split: str = "domain", terms: Sequence[str] = (), top: int = 10,
                  audio_root: str | Path | None = None, spectrograms: bool = True) -> RunBreakdown:
    """Everything section 3 of the analysis shows for one run and split (baseline vs best).
    Audio paths resolve as the error browser's do (`audio_root`: the project root by default)."""
    base, best = run.predictions(split, "baseline"), run.predictions(split, "best")
    spk_b = {s["speaker"]: s for s in speaker_wer(base)}
    speakers = [{"speaker": s["speaker"], "utterances": s["utterances"], "ref_words": s["ref_words"],
                 "baseline_wer": spk_b[s["speaker"]]["wer"], "tuned_wer": s["wer"]}
                for s in sorted(speaker_wer(best), key=lambda s: s["speaker"])]
    term_rows = []
    base_terms = {t["term"]: t for t in term_errors(base, terms)}
    for t in term_errors(best, terms):
        b = base_terms.get(t["term"])
        term_rows.append({"term": t["term"], "occurrences": t["occurrences"],
                          "baseline_rate": b["rate"] if b else None, "tuned_rate": t["rate"],
                          "heard_as": ", ".join(t["heard_as"])})
    # the most frequent terms: where a change is measured on enough occurrences to mean something
    term_rows.sort(key=lambda r: (-r["occurrences"], -r["tuned_rate"], r["term"]))
    worst = [{**w, "audio": resolve_audio(w["audio_filepath"], run, split, audio_root)}
             for w in worst_utterances(best, top)]
    return RunBreakdown(run.run_id, split, error_counts(base), error_counts(best), speakers,
                        confusions(best, top), worst, utterance_changes(base, best), term_rows[:top], spectrograms)


def run_breakdowns(runs: Sequence[Run], terms: Sequence[str] = (), top: int = 10,
                   audio_root: str | Path | None = None, spectrograms: bool = True) -> list[RunBreakdown]:
    """`run_breakdown` for every finished run and every split it has predictions for."""
    return [run_breakdown(r, s, terms, top, audio_root, spectrograms) for r in runs if r.status == "finished" and not r.archived
            for s in r.splits()]


def error_table(breakdowns: Sequence[RunBreakdown]) -> list[dict]:
    """Between runs: S/D/I and WER of baseline and tuned, one row per run, split and tag."""
    rows = []
    for b in breakdowns:
        for tag, c in (("baseline", b.baseline), ("tuned", b.tuned)):
            rows.append({"run": b.run_id, "split": b.split, "predictions": tag, **c})
    return rows


ERROR_TABLE_COLUMNS = [("run", "run"), ("split", "split"), ("predictions", "predictions"),
                       ("sub", "S"), ("del", "D"), ("ins", "I"), ("errors", "errors"),
                       ("ref_words", "ref words"), ("wer", "WER")]


def error_table_html(breakdowns: Sequence[RunBreakdown]) -> str:
    if not breakdowns:
        return "<p>No finished runs with predictions.</p>"
    return html_table(error_table(breakdowns), ERROR_TABLE_COLUMNS,
                      "Substitutions, deletions, insertions across runs")


def compare_runs(run_a: Run, run_b: Run, split: str = "domain") -> list[dict]:
    """Per utterance, from run_a's best predictions to run_b's (delta < 0: run_b better)."""
    return utterance_changes(run_a.predictions(split, "best"), run_b.predictions(split, "best"))


def compare_runs_html(runs: Sequence[Run], run_ids: Sequence[str] | str, top: int = 10) -> str:
    """Utterance-level comparison of the first named run against each other named run."""
    picked = select_runs(runs, run_ids)
    if len(picked) < 2:
        return "<p>Name two or more runs in <code>compare_run_ids</code> to compare them utterance by utterance.</p>"
    ref, parts = picked[0], []
    for other in picked[1:]:
        for split in sorted(set(ref.splits()) & set(other.splits())):
            changes = compare_runs(ref, other, split)
            s = change_summary(changes)
            moved = [c for c in changes if c["change"] != "same"]
            moved = sorted(moved, key=lambda c: (-abs(c["delta"]), c["id"]))[:top]
            parts.append(html_table(moved, [("id", "id"), ("speaker", "speaker"),
                                            ("before_errors", f"{ref.run_id} errors"),
                                            ("after_errors", f"{other.run_id} errors"),
                                            ("delta", "Δ errors"), ("change", "change")],
                                    f"{split}: {other.run_id} vs {ref.run_id}: {s['better']} better, "
                                    f"{s['worse']} worse, net {s['net_errors']:+d} errors"))
    return "\n".join(parts) or "<p>The named runs share no split with predictions.</p>"


# ---------------------------------------------------------------------------------------------
# HTML rendering (plain tables; no pandas needed)


def breakdown_html(b: RunBreakdown) -> str:
    s = b.summary()
    counts = [{"predictions": tag, **{k: format_value(c[k]) for k in ("sub", "del", "ins", "errors", "ref_words", "wer")}}
              for tag, c in (("baseline", b.baseline), ("tuned (best)", b.tuned))]
    moved = [c for c in b.changes if c["change"] != "same"]
    parts = [
        f"<h4>{html.escape(b.run_id)} · {html.escape(b.split)}</h4>",
        f"<p>{s['better']} utterances better, {s['worse']} worse, {s['same']} unchanged "
        f"(net {s['net_errors']:+d} errors).</p>",
        html_table(counts, [("predictions", ""), ("sub", "S"), ("del", "D"), ("ins", "I"),
                            ("errors", "errors"), ("ref_words", "ref words"), ("wer", "WER")],
                   "Substitutions, deletions, insertions"),
        html_table(b.speakers, [("speaker", "speaker"), ("utterances", "utterances"),
                                ("ref_words", "ref words"), ("baseline_wer", "baseline WER"),
                                ("tuned_wer", "tuned WER")], "WER per speaker"),
        html_table(b.confusions, [("ref", "ref"), ("hyp", "hyp"), ("kind", "kind"), ("count", "count")],
                   "Most frequent confusions (tuned; * = nothing)"),
        html_table([{**w, "clip": clip_view(w["audio"], w["audio_filepath"]) if b.spectrograms else None}
                    for w in b.worst],
                   [("id", "id"), ("speaker", "speaker"), ("wer", "WER"), ("aligned", "aligned")]
                   + ([("clip", "spectrogram")] if b.spectrograms else []), "Worst utterances (tuned)"),
        html_table(moved, [("id", "id"), ("speaker", "speaker"), ("before_errors", "baseline errors"),
                           ("after_errors", "tuned errors"), ("delta", "Δ errors"), ("change", "change")],
                   "Utterances that changed, worst first"),
    ]
    if b.terms:
        parts.append(html_table(b.terms, [("term", "term"), ("occurrences", "occurrences"),
                                          ("baseline_rate", "baseline error rate"),
                                          ("tuned_rate", "tuned error rate"), ("heard_as", "tuned heard as")],
                                "Domain terms, highest tuned error rate first"))
    return "\n".join(parts)
