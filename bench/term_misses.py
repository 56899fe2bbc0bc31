"""Misses of the demo's clinical terms on the domain test set, baseline vs tuned, for the README's prompt
comparison: terms the training set holds, and the domain-only terms it never does (`corpus.json`).

    python bench/term_misses.py demo demo-prompt prompt-terms domain-only-default

A term occurrence counts as recognized only when every word of it is aligned as equal
(`lorakit.analysis.breakdown.term_errors`, the analysis notebook's term table).
"""

from __future__ import annotations

import json
import sys

from lorakit.scoring import normalize_term
from lorakit.analysis.breakdown import read_terms, term_errors
from lorakit.analysis.runs import load_runs
from lorakit.env import project_root


def misses(rows: list[dict], terms: list[str]) -> dict:
    found = term_errors(rows, terms)
    n, m = sum(t["occurrences"] for t in found), sum(t["misses"] for t in found)
    return {"occurrences": n, "misses": m, "rate": round(100 * m / n, 1) if n else None}


def main(run_ids: list[str]) -> None:
    root = project_root()
    corpus = json.loads((root / "data" / "demo" / "corpus.json").read_text())
    only = {normalize_term(t) for t in corpus["domain_only_terms"]}
    terms = read_terms(root / "data" / "demo" / "terms.txt")
    groups = {"seen in training": [t for t in terms if t not in only], "domain-only": [t for t in terms if t in only]}
    runs = {r.run_id: r for r in load_runs(root / "executed")}
    for run_id in run_ids:
        run = runs[run_id]
        row = {"run": run_id, "file": run.predictions_path("domain", "best").name}  # the test set's when the run has one
        for tag in ("baseline", "best"):
            rows = run.predictions("domain", tag)
            row[tag] = {name: misses(rows, group) for name, group in groups.items()}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
