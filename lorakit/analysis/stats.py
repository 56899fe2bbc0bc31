"""The statistics of a comparison: utterance pairing, the paired bootstrap of the corpus-WER delta,
the protocol's verdict, and seed replicates aggregated (mean ± sd, per-seed and overall verdicts).
Pure functions of prediction rows and matrix rows: no run folders, no torch.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..record import SPLIT_KEYS, delta_pts

_EPS_PTS = 1e-9  # float slack when comparing deltas with thresholds (0.0469-0.0449 != 0.2 pt)


class PredictionMismatch(ValueError):
    """Baseline and tuned predictions that cannot be paired utterance by utterance."""


def pair_predictions(baseline: Sequence[dict], tuned: Sequence[dict]) -> list[tuple[dict, dict]]:
    """Join two prediction lists on `id`, in baseline order; refuse anything that does not pair."""
    def by_id(rows, name):
        out = {}
        for r in rows:
            if r["id"] in out:
                raise PredictionMismatch(f"{name} predictions repeat id {r['id']!r}")
            out[r["id"]] = r
        return out

    base, tune = by_id(baseline, "baseline"), by_id(tuned, "tuned")
    only_b, only_t = sorted(base.keys() - tune.keys()), sorted(tune.keys() - base.keys())
    if only_b or only_t:
        raise PredictionMismatch(
            "baseline and tuned predictions cover different utterances: "
            f"{len(only_b)} only in baseline {only_b[:3]}, {len(only_t)} only in tuned {only_t[:3]}")
    for uid, b in base.items():
        if b["ref_words"] != tune[uid]["ref_words"]:
            raise PredictionMismatch(f"utterance {uid!r} has {b['ref_words']} reference words in "
                                     f"baseline but {tune[uid]['ref_words']} in tuned")
    return [(b, tune[uid]) for uid, b in base.items()]


@dataclass(frozen=True)
class DeltaCI:
    """Corpus WER delta (tuned - baseline) in points with its percentile bootstrap CI."""

    delta_pts: float
    low_pts: float
    high_pts: float
    n_utterances: int
    n_resamples: int

    def excludes_zero(self) -> bool:
        return self.high_pts < 0 or self.low_pts > 0


def paired_bootstrap(baseline: Sequence[dict], tuned: Sequence[dict], n_resamples: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> DeltaCI:
    """Paired bootstrap over utterances of the corpus-WER delta.

    Each resample draws utterance indices with replacement and scores baseline and tuned on the
    same draw: WER = sum(errors) / sum(ref_words). The CI is the percentile interval.
    """
    pairs = pair_predictions(baseline, tuned)
    if not pairs:
        raise PredictionMismatch("no utterances to bootstrap")
    err_b = np.array([b["errors"] for b, _ in pairs], dtype=np.int64)
    err_t = np.array([t["errors"] for _, t in pairs], dtype=np.int64)
    words = np.array([b["ref_words"] for b, _ in pairs], dtype=np.int64)
    diff = err_t - err_b
    rng = np.random.default_rng(seed)
    n = len(pairs)
    deltas = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)  # bounds memory at ~16 MB of indices
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        w = words[idx].sum(axis=1)
        deltas[start:stop] = diff[idx].sum(axis=1) / np.maximum(w, 1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    point = diff.sum() / max(words.sum(), 1)
    return DeltaCI(float(point * 100), float(low * 100), float(high * 100), n, n_resamples)


# ---------------------------------------------------------------------------------------------
# Verdict


def verdict(row: dict, min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float = 0.2,
            require_ci: bool = True) -> str:
    """"accept", "reject (why)", "inconclusive (why)" or "n/a (status)" for a matrix row.

    Accept needs: domain WER down by at least `min_domain_gain_pts` (and, with `require_ci`,
    a domain CI entirely below zero) and heldout WER up by at most `max_heldout_regression_pts`.
    """
    if row.get("status") != "finished":
        return f"n/a ({row.get('status')})"
    if row.get("error"):
        return f"inconclusive ({row['error']})"
    d, h = row.get("domain_delta_pts"), row.get("heldout_delta_pts")
    if d is None:
        return "inconclusive (no domain WER)"
    reasons = []
    if -d < min_domain_gain_pts - _EPS_PTS:
        reasons.append(f"domain gain {0.0 - d:.2f} pt < {min_domain_gain_pts:g}")  # 0.0 - 0.0: no "-0.00"
    if h is not None and h > max_heldout_regression_pts + _EPS_PTS:
        reasons.append(f"heldout regression {h:.2f} pt > {max_heldout_regression_pts:g}")
    if reasons:
        return f"reject ({'; '.join(reasons)})"
    if h is None:
        return "inconclusive (no heldout WER)"
    if require_ci:
        low, high = row.get("domain_ci_low"), row.get("domain_ci_high")
        if low is None:
            return "inconclusive (no domain predictions for a CI)"
        if high >= 0:
            return f"inconclusive (domain CI [{low:+.2f}, {high:+.2f}] includes 0)"
    return "accept"


# --- seed replicates ------------------------------------------------------------------------------
NOT_CONFIG = ("seed", "run_id", "notes", "output_dir")  # what seed replicates may differ in
WER_KEYS = tuple(k for pair in SPLIT_KEYS.values() for k in pair)


def _config_of(row: dict) -> dict:
    """The run's configuration: row["config"] (config.json's), or the JSON `config_key` of a run-matrix row."""
    if isinstance(row.get("config"), dict):
        return row["config"]
    if row.get("config_key"):
        return json.loads(row["config_key"])
    raise ValueError(f"row {row.get('run_id')!r} has neither 'config' nor 'config_key'")


def seed_verdict(row: dict, min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float = 0.2) -> str:
    """The protocol's acceptance for one run, on its point estimates (`verdict` without the CI):
    domain WER down by at least `min_domain_gain_pts`, heldout WER up by at most `max_heldout_regression_pts`."""
    deltas = {f"{split}_delta_pts": delta_pts(row.get(base), row.get(tuned)) for split, (base, tuned) in SPLIT_KEYS.items()}
    return verdict({"status": "finished", **deltas}, min_domain_gain_pts, max_heldout_regression_pts, require_ci=False)


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate_seeds(rows: Sequence[dict], min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float = 0.2,
                    min_seeds: int = 2) -> list[dict]:
    """Seed replicates aggregated: finished runs whose configuration is identical except seed, run_id,
    notes and output_dir form a group; each group gets mean and sd (sample, n-1) of each WER and of
    the domain/heldout deltas in points, every seed's verdict, and an overall verdict: accept when
    every seed accepts, reject when any rejects, inconclusive otherwise.

    `rows` are dicts with run_id, seed, status (only "finished" counts; missing means finished), the
    four WERs (fractions) and the configuration as `config` (config.json's) or `config_key` (JSON, as
    in `matrix.run_matrix(...).rows`). Groups with fewer than `min_seeds` runs are left out.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("status", "finished") != "finished":
            continue
        config = {k: v for k, v in _config_of(row).items() if k not in NOT_CONFIG}
        groups.setdefault(json.dumps(config, sort_keys=True, default=str), []).append(row)
    out = []
    for key, members in groups.items():
        if len(members) < min_seeds:
            continue
        members = sorted(members, key=lambda r: (str(r.get("seed")), r.get("run_id", "")))
        agg: dict[str, Any] = {"config": json.loads(key), "runs": [r.get("run_id") for r in members],
                               "seeds": [r.get("seed", _config_of(r).get("seed")) for r in members], "n": len(members)}
        for k in WER_KEYS:
            agg[f"{k}_mean"], agg[f"{k}_sd"] = _mean_sd([r[k] for r in members if r.get(k) is not None])
        for split, (b, t) in SPLIT_KEYS.items():
            deltas = [delta_pts(r[b], r[t]) for r in members if r.get(b) is not None and r.get(t) is not None]
            agg[f"{split}_delta_pts_mean"], agg[f"{split}_delta_pts_sd"] = _mean_sd(deltas)
        verdicts = [seed_verdict(r, min_domain_gain_pts, max_heldout_regression_pts) for r in members]
        agg["verdicts"] = dict(zip(map(str, agg["seeds"]), verdicts))
        accepted = sum(v == "accept" for v in verdicts)
        rejected = sum(v.startswith("reject") for v in verdicts)
        if accepted == len(verdicts):
            agg["verdict"] = "accept"
        elif rejected:
            agg["verdict"] = f"reject ({rejected} of {len(verdicts)} seeds rejected)"
        else:
            agg["verdict"] = f"inconclusive ({accepted} of {len(verdicts)} seeds accepted)"
        out.append(agg)
    return out
