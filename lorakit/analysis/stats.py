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

from ..config import RunConfig
from ..record import SPLIT_KEYS, delta_pts, guardrail_excess, result_config, within_guardrail


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
    """Corpus WER delta (tuned - baseline) in points with its percentile bootstrap CI.

    `prob_improvement` is the fraction of resamples in which tuned is better (delta < 0): Bisani &
    Ney's probability of improvement. `n_blocks` is the number of speakers for a speaker-block
    bootstrap, None for the bootstrap over utterances."""

    delta_pts: float
    low_pts: float
    high_pts: float
    n_utterances: int
    n_resamples: int
    prob_improvement: float | None = None
    n_blocks: int | None = None

    def excludes_zero(self) -> bool:
        return self.high_pts < 0 or self.low_pts > 0

    @property
    def width_pts(self) -> float:
        return self.high_pts - self.low_pts


def _resampled_deltas(diff: np.ndarray, words: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Corpus deltas of `n_resamples` draws with replacement of the units (utterances or speaker
    blocks) whose error differences and reference words are `diff` and `words`. Drawn in chunks so
    memory stays at ~16 MB of indices whatever the size."""
    rng = np.random.default_rng(seed)
    n = len(diff)
    deltas = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        w = words[idx].sum(axis=1)
        deltas[start:stop] = diff[idx].sum(axis=1) / np.maximum(w, 1)
    return deltas


def _delta_ci(diff: np.ndarray, words: np.ndarray, n_utterances: int, n_resamples: int, seed: int,
              confidence: float, n_blocks: int | None = None) -> DeltaCI:
    deltas = _resampled_deltas(diff, words, n_resamples, seed)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    point = diff.sum() / max(words.sum(), 1)
    poi = float(np.mean(deltas < -1e-12))  # strictly better; identical systems: 0
    return DeltaCI(float(point * 100), float(low * 100), float(high * 100), n_utterances, n_resamples,
                   poi, n_blocks)


def _paired_arrays(baseline: Sequence[dict], tuned: Sequence[dict]) -> tuple[list, np.ndarray, np.ndarray]:
    pairs = pair_predictions(baseline, tuned)
    if not pairs:
        raise PredictionMismatch("no utterances to bootstrap")
    diff = np.array([t["errors"] - b["errors"] for b, t in pairs], dtype=np.int64)
    words = np.array([b["ref_words"] for b, _ in pairs], dtype=np.int64)
    return pairs, diff, words


def paired_bootstrap(baseline: Sequence[dict], tuned: Sequence[dict], n_resamples: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> DeltaCI:
    """Paired bootstrap over utterances of the corpus-WER delta.

    Each resample draws utterance indices with replacement and scores baseline and tuned on the
    same draw: WER = sum(errors) / sum(ref_words). The CI is the percentile interval; the
    probability of improvement the share of resamples with a negative delta.
    """
    pairs, diff, words = _paired_arrays(baseline, tuned)
    return _delta_ci(diff, words, len(pairs), n_resamples, seed, confidence)


def speakers_of(rows: Sequence[dict]) -> list[str] | None:
    """Each row's `speaker_id` as text, or None when any row has none."""
    ids = [r.get("speaker_id") for r in rows]
    return None if not ids or any(i is None or i == "" for i in ids) else [str(i) for i in ids]


def block_bootstrap(baseline: Sequence[dict], tuned: Sequence[dict], n_resamples: int = 2000,
                    seed: int = 0, confidence: float = 0.95) -> DeltaCI:
    """Paired bootstrap over speaker blocks (Liu & Peng's blockwise bootstrap) of the corpus-WER delta.

    Each resample draws speakers with replacement and takes all of a drawn speaker's utterances,
    baseline and tuned together, so errors that cluster by speaker widen the CI as they should.
    Needs `speaker_id` on every baseline row (PredictionMismatch otherwise).
    """
    pairs, diff, words = _paired_arrays(baseline, tuned)
    speakers = speakers_of([b for b, _ in pairs])
    if speakers is None:
        raise PredictionMismatch("a speaker-block bootstrap needs speaker_id on every prediction")
    names, block = np.unique(np.array(speakers), return_inverse=True)
    diff_s = np.bincount(block, weights=diff, minlength=len(names)).astype(np.int64)
    words_s = np.bincount(block, weights=words, minlength=len(names)).astype(np.int64)
    return _delta_ci(diff_s, words_s, len(pairs), n_resamples, seed, confidence, n_blocks=len(names))


# ---------------------------------------------------------------------------------------------
# Verdict


GUARDRAIL_TESTS = ("point", "noninferiority")
PROVISIONAL = "provisional: chosen on the reported set"  # a verdict on numbers that also chose the checkpoint


def row_guardrail(row: dict, max_heldout_regression_pts: float | None = None) -> float:
    """The heldout margin (points) a row is judged by: `max_heldout_regression_pts` when the analysis sets one,
    else the run's own recorded `guardrail` (the one its checkpoint selection used; a row without one, the
    default's), so selection, verdict and search judge a run by one threshold."""
    if max_heldout_regression_pts is not None:
        return float(max_heldout_regression_pts)
    recorded = row.get("guardrail")
    if isinstance(recorded, bool) or not isinstance(recorded, (int, float)):  # none, or an old record's `guardrail: true` (a flag)
        return float(RunConfig.guardrail)
    return float(recorded)


def heldout_ci_high(row: dict) -> float | None:
    """The upper bound of the heldout delta's CI that non-inferiority uses: the wider (higher) of the
    utterance and speaker-block CIs' upper bounds, whichever the row has."""
    highs = [row.get(k) for k in ("heldout_ci_high", "heldout_block_ci_high") if row.get(k) is not None]
    return max(highs) if highs else None


def guardrail_checks(row: dict, max_heldout_regression_pts: float | None = None) -> dict:
    """Both heldout guardrail criteria for a matrix row, True (pass) / False (fail) / None (no numbers):
    "point", the old team's (heldout delta ≤ margin), and "noninferiority" (the upper bound of the
    heldout delta's CI ≤ margin, see `heldout_ci_high`). The margin: `row_guardrail`; the comparison:
    `record.within_guardrail`, selection's and the search's."""
    h, high, margin = row.get("heldout_delta_pts"), heldout_ci_high(row), row_guardrail(row, max_heldout_regression_pts)
    return {"point": None if h is None else within_guardrail(h, margin),
            "noninferiority": None if high is None else within_guardrail(high, margin)}


def verdict(row: dict, min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float | None = None,
            require_ci: bool = True, guardrail_test: str = "point") -> str:
    """"accept", "reject (why)", "inconclusive (why)" or "n/a (status)" for a matrix row.

    Accept needs: domain WER down by at least `min_domain_gain_pts` (and, with `require_ci`,
    a domain CI entirely below zero) and heldout WER up by at most `max_heldout_regression_pts`.
    `guardrail_test` picks the heldout criterion: "point" (the protocol: the point delta) or
    "noninferiority" (also the upper bound of the heldout CI ≤ the margin; a point that passes with
    a CI that does not is inconclusive). `guardrail_checks` gives both for the matrix.
    `max_heldout_regression_pts` None: each run's recorded guardrail (`row_guardrail`). A row whose
    reported numbers also chose the checkpoint (`chosen_on_reported`) gets its verdict marked `PROVISIONAL`.
    """
    out = _verdict(row, min_domain_gain_pts, row_guardrail(row, max_heldout_regression_pts), require_ci, guardrail_test)
    return f"{out} [{PROVISIONAL}]" if row.get("chosen_on_reported") and row.get("status") == "finished" else out


def _verdict(row: dict, min_domain_gain_pts: float, max_heldout_regression_pts: float, require_ci: bool,
             guardrail_test: str) -> str:
    if guardrail_test not in GUARDRAIL_TESTS:
        raise ValueError(f"guardrail_test must be one of {GUARDRAIL_TESTS}, got {guardrail_test!r}")
    if row.get("status") != "finished":
        return f"n/a ({row.get('status')})"
    if row.get("error"):
        return f"inconclusive ({row['error']})"
    d, h = row.get("domain_delta_pts"), row.get("heldout_delta_pts")
    if d is None:
        return "inconclusive (no domain WER)"
    reasons = []
    if guardrail_excess(min_domain_gain_pts, -d) > 0:  # the same rounding as the guardrail's
        reasons.append(f"domain gain {0.0 - d:.2f} pt < {min_domain_gain_pts:g}")  # 0.0 - 0.0: no "-0.00"
    if not within_guardrail(h, max_heldout_regression_pts):
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
    if guardrail_test == "noninferiority":
        return _noninferiority_verdict(row, max_heldout_regression_pts)
    return "accept"


def _noninferiority_verdict(row: dict, margin: float) -> str:
    high = heldout_ci_high(row)
    if high is None:
        return "inconclusive (no heldout predictions for a non-inferiority CI)"
    if not guardrail_checks(row, margin)["noninferiority"]:
        return f"inconclusive (heldout CI upper bound {high:+.2f} pt > {margin:g}: non-inferiority not shown)"
    return "accept"


# --- seed replicates ------------------------------------------------------------------------------
WER_KEYS = tuple(k for pair in SPLIT_KEYS.values() for k in pair)


def _config_of(row: dict) -> dict:
    """The run's configuration: row["config"] (config.json's), or the JSON `config_key` of a run-matrix row."""
    if isinstance(row.get("config"), dict):
        return row["config"]
    if row.get("config_key"):
        return json.loads(row["config_key"])
    raise ValueError(f"row {row.get('run_id')!r} has neither 'config' nor 'config_key'")


def seed_verdict(row: dict, min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float | None = None) -> str:
    """The protocol's acceptance for one run, on its point estimates (`verdict` without the CI):
    domain WER down by at least `min_domain_gain_pts`, heldout WER up by at most `max_heldout_regression_pts`
    (None: the run's recorded guardrail, from the row or its configuration)."""
    deltas = {f"{split}_delta_pts": delta_pts(row.get(base), row.get(tuned)) for split, (base, tuned) in SPLIT_KEYS.items()}
    guardrail = row.get("guardrail")
    if guardrail is None and (row.get("config") or row.get("config_key")):
        guardrail = _config_of(row).get("guardrail")
    return verdict({"status": "finished", "guardrail": guardrail, "chosen_on_reported": row.get("chosen_on_reported"), **deltas},
                   min_domain_gain_pts, max_heldout_regression_pts, require_ci=False)


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate_seeds(rows: Sequence[dict], min_domain_gain_pts: float = 1.0, max_heldout_regression_pts: float | None = None,
                    min_seeds: int = 2) -> list[dict]:
    """Seed replicates aggregated: finished runs whose configuration is identical except seed and the
    fields that name a run (`config.NAMING_FIELDS`: run_id, command, notes...) form a group; each group gets mean and sd (sample, n-1) of each WER and of
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
        config = {k: v for k, v in result_config(_config_of(row)).items() if k != "seed"}
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
        accepted = sum(v.startswith("accept") for v in verdicts)
        rejected = sum(v.startswith("reject") for v in verdicts)
        if accepted == len(verdicts):
            agg["verdict"] = "accept"
        elif rejected:
            agg["verdict"] = f"reject ({rejected} of {len(verdicts)} seeds rejected)"
        else:
            agg["verdict"] = f"inconclusive ({accepted} of {len(verdicts)} seeds accepted)"
        if any(PROVISIONAL in v for v in verdicts):
            agg["verdict"] += f" [{PROVISIONAL}]"
        out.append(agg)
    return out
