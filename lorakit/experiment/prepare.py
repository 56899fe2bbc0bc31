"""Everything a run checks before it trains: read the manifests (file:line:field errors, or counted
skips), the duration filter with its starvation guard, a seeded training subset, every clip decoded
once (unusable audio is an error or a counted skip), training texts that fit the decoder, at least
`min_train_clips`, and the train/eval leakage check. A replay manifest (general speech mixed into
training batches) goes through the same checks: duration filter, usable audio, fitting texts, and
leakage into the eval sets. The result is `Splits` plus the counts that go into the run record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError, RunConfig
from ..display import progress_bar
from .audio import AudioError, load_audio
from .batches import subset
from .devtest import dev_test_leakage, split_dev_test
from .leakage import check_leakage
from .hf_datasets import read_input
from .features import check_clip_languages
from .pseudo_labels import is_unlabeled, read_unlabeled
from .manifests import Manifest, ManifestError, Utterance, declare_languages, filter_by_duration, training_languages
from .models import SpeechModel


@dataclass
class Splits:
    train: list[Utterance]
    evals: dict[str, list[Utterance]]  # "domain" (primary) and, when given, "heldout"
    manifests: dict[str, Manifest]
    report: dict = field(default_factory=dict)  # counts for the run record
    warnings: list[str] = field(default_factory=list)
    replay: list[Utterance] = field(default_factory=list)  # general speech for replay_ratio of every batch
    tests: dict[str, list[Utterance]] = field(default_factory=dict)  # "domain_test", "heldout_test", "real": report, never choose

    @property
    def has_test(self) -> bool:
        """Whether dev sets choose and test sets report (the real-speech set alone is only a sanity figure)."""
        return bool(set(self.tests) - {"real"})

    def reported(self, name: str) -> str:
        """The set whose numbers are reported for eval set `name`: its test set when there is one."""
        return f"{name}_test" if f"{name}_test" in self.tests else name

    @property
    def reported_on(self) -> str:
        """"test" when every reported set (domain, heldout) is a test set, "selection" when none is (its numbers
        are those that chose the checkpoint), "mixed" otherwise (a domain test set, heldout with test_split 0)."""
        tested = [name for name in self.evals if f"{name}_test" in self.tests]
        return "test" if len(tested) == len(self.evals) else "mixed" if tested else "selection"


TEST_SETS = ("domain_test", "heldout_test", "real")  # evaluated twice (baseline, reloaded best adapter), never to choose
EVAL_SETS = ("domain", "heldout", *TEST_SETS)
MIN_CLIP_SECONDS = 0.1  # no word fits in less; Moonshine's first convolution needs ~0.06 s of input
DURATION_TOLERANCE = 0.25  # seconds (or 10 % of the clip): manifests round durations; truncated copies lose more
EVAL_SUBSET_SEED = 0  # `max_eval_utterances` subsets are drawn with this seed, never the run's: every seed is scored on the same clips


def _clip_problem(u: Utterance, sampling_rate: int, rms_target: float, window: float | None = None) -> tuple[str, str] | None:
    """(field, problem) when a clip cannot be used as it is listed, else None. `window`: the longest
    clip the model sees whole (Whisper's 30 s); a longer one would be cut without a word. A silent or
    near-silent clip (under `audio.SILENCE_FLOOR_DBFS`) is refused by `load_audio` itself."""
    try:
        x = load_audio(u.audio_filepath, sampling_rate=sampling_rate, rms_target=rms_target)
    except AudioError as exc:
        return "audio_filepath", str(exc)
    seconds = x.size / sampling_rate
    if seconds < MIN_CLIP_SECONDS:
        return "audio_filepath", f"{u.audio_filepath}: too short ({seconds:.3f} s < {MIN_CLIP_SECONDS} s)"
    if abs(seconds - u.duration) > max(DURATION_TOLERANCE, 0.1 * u.duration):
        # a truncated copy, or a wrong field that the duration filter trusted
        return "duration", f"says {u.duration:g} s but {u.audio_filepath} lasts {seconds:.2f} s (truncated file or wrong field)"
    if window is not None and seconds > window:
        return "duration", (f"{u.audio_filepath} lasts {seconds:.2f} s, over the model's {window:g} s input window: Whisper would "
                            "hear only the start and be scored on the whole text (split the clip, or on_bad_audio='skip')")
    return None


def _field(u: Utterance, name: str, cfg: RunConfig) -> str:
    """The field an error names: the JSONL key, or for a Hugging Face dataset's row the column it came from."""
    if u.unit == "line":
        return name
    return {"audio_filepath": cfg.audio_column, "text": cfg.text_column}.get(name, name)


def _usable_audio(utts: list[Utterance], cfg: RunConfig, sampling_rate: int, skipped: list,
                  window: float | None = None) -> list[Utterance]:
    """Decode every clip once up front, so a bad file fails (or is skipped) before training starts."""
    good = []
    for u in progress_bar(utts, desc="check audio", unit="clip", leave=False):
        problem = _clip_problem(u, sampling_rate, cfg.rms_target, window)
        if problem is None:
            good.append(u)
            continue
        name, reason = _field(u, problem[0], cfg), problem[1]
        if cfg.on_bad_audio == "error":
            raise AudioError(f"{u.where}: field '{name}': {reason}", u.audio_filepath)
        skipped.append({"manifest": u.manifest, "line": u.line, "field": name, "reason": reason})
    return good


def _fitting_labels(utts: list[Utterance], sm: SpeechModel | None, cfg: RunConfig, skipped: list) -> list[Utterance]:
    """Training texts the decoder can take: Whisper refuses labels over `max_target_positions`
    tokens, which would otherwise stop the run at whichever step first draws that clip."""
    limit = getattr(sm.base.config, "max_target_positions", None) if sm is not None else None
    if not limit:
        return list(utts)
    good = []
    for u in utts:
        n = len(sm.label_ids(u.text, u.language))
        if n <= limit:
            good.append(u)
            continue
        err = ManifestError(u.manifest, u.line, _field(u, "text", cfg), f"{n} tokens, over the model's limit of {limit} "
                            f"({u.text[:40]!r}...)", unit=u.unit)
        if cfg.on_bad_audio == "error":
            raise err
        skipped.append({"manifest": u.manifest, "line": u.line, "field": err.field, "reason": err.reason})
    return good


def prepare_data(cfg: RunConfig, sampling_rate: int = 16_000, sm: SpeechModel | None = None) -> Splits:
    """Read, filter and check every manifest and clip before any training: bad input is an error
    naming file, line and field, or (on_bad_audio='skip') a skip counted in `report`. With `sm`,
    training texts are also checked against the model's label limit, and every clip against its input
    window (Whisper: 30 s; a longer clip is an error naming file, line and duration, or a counted skip)."""
    manifests, report, warnings = _read_manifests(cfg)
    if sm is not None:  # a clip in a language the model cannot be prompted with stops the run before any decoding
        check_clip_languages(sm, manifests)
    train = _filtered_train(cfg, manifests["train"], report)
    skipped_audio: list[dict] = []
    window = sm.input_seconds if sm is not None else None
    train = _usable_audio(train, cfg, sampling_rate, skipped_audio, window)
    evals = {name: _usable_audio(_eval_subset(name, utts, cfg, report), cfg, sampling_rate, skipped_audio, window)
             for name, utts in _eval_sources(cfg, manifests, report, warnings).items()}
    skipped_text: list[dict] = []
    train = _fitting_labels(train, sm, cfg, skipped_text)
    report["train"]["used"] = len(train)
    replay = _replay(cfg, manifests, report, sampling_rate, sm, skipped_audio, skipped_text)
    report["training_languages"] = languages = training_languages(train, replay, cfg.replay_per_batch(), cfg.batch_size)
    print("training languages (share of each batch): " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in languages["batches"].items()))
    for name, utts in evals.items():  # dev and test sets alike
        report[name]["used"] = len(utts)
        if not utts:  # a WER over nothing would read 0.0
            raise ManifestError(manifests[name].path, None, None, f"no usable clips in the {name} set "
                                f"({sum(s['manifest'] == manifests[name].path for s in skipped_audio)} bad clips skipped)")
    _report_skips(report, warnings, skipped_audio, skipped_text)
    if len(train) < cfg.min_train_clips:
        raise ConfigError(f"only {len(train)} usable training clips remain (min_train_clips={cfg.min_train_clips}); refusing to train")
    if len(train) < cfg.batch_size - cfg.replay_per_batch():
        raise ConfigError(f"batch_size={cfg.batch_size} needs {cfg.batch_size - cfg.replay_per_batch()} training clips per batch, "
                          f"more than the {len(train)} usable ones")
    _leakage(train + replay, evals, report, warnings)
    tests = {name: evals.pop(name) for name in TEST_SETS if name in evals}
    _dev_test_overlap(evals, tests, report, warnings)
    for w in warnings:
        print("WARNING:", w)
    return Splits(train=train, evals=evals, manifests=manifests, report=report, warnings=warnings, replay=replay, tests=tests)


def _read_manifests(cfg: RunConfig) -> tuple[dict[str, Manifest], dict, list[str]]:
    """Every manifest of the run (JSONL or Hugging Face dataset), with its line (row) counts and skipped bad lines for the record."""
    specs = {name: cfg.input_spec(f"{name}_manifest") if name != "replay" or cfg.replay_per_batch() else None
             for name in ("train", "domain", "heldout", "replay", "domain_test", "heldout_test", "real")}
    manifests = {name: read_unlabeled(spec) if name == "replay" and is_unlabeled(spec)  # pseudo-labelled after the baseline
                 else read_input(spec, cfg.on_bad_audio, **cfg.columns()) for name, spec in specs.items() if spec is not None}
    manifests = declare_languages(cfg, manifests)  # each clip's language; replay in another one than the run's is refused here
    report: dict = {name: {"lines": len(m.utterances) + len(m.skipped), "bad_lines_skipped": len(m.skipped),
                           "bad_lines": [{"line": line, "reason": reason} for line, reason in m.skipped]}
                    for name, m in manifests.items()}
    warnings = [f"{name}: skipped {len(m.skipped)} bad manifest {m.unit}(s), e.g. {m.unit} {m.skipped[0][0]}: {m.skipped[0][1]}"
                for name, m in manifests.items() if m.skipped]
    return manifests, report, warnings


def _filtered_train(cfg: RunConfig, manifest: Manifest, report: dict) -> list[Utterance]:
    """Training clips within `max_seconds` (refusing starvation), then the seeded subset."""
    filtered = filter_by_duration(manifest.utterances, max_seconds=cfg.max_seconds, min_keep=cfg.min_train_clips,
                                  min_keep_fraction=cfg.min_keep_fraction, what="train")
    print(f"train: {filtered.summary()}")
    report["train"].update(kept=len(filtered.kept), dropped_over_max_seconds=len(filtered.dropped), max_seconds=cfg.max_seconds)
    train = subset(filtered.kept, cfg.max_train_utterances, cfg.seed)
    if len(train) < len(filtered.kept):
        print(f"train: using a seeded subset of {len(train)} of {len(filtered.kept)} clips (max_train_utterances)")
    return train


def _replay(cfg: RunConfig, manifests: dict[str, Manifest], report: dict, sampling_rate: int, sm: SpeechModel | None,
            skipped_audio: list, skipped_text: list) -> list[Utterance]:
    """The replay clips, checked as training clips are: within `max_seconds` (the same starvation guard),
    usable audio, texts that fit the decoder; at least `replay_per_batch` of them. [] without replay."""
    n = cfg.replay_per_batch()
    if not n:
        return []
    filtered = filter_by_duration(manifests["replay"].utterances, max_seconds=cfg.max_seconds, min_keep=n,
                                  min_keep_fraction=cfg.min_keep_fraction, what="replay")
    print(f"replay: {filtered.summary()}")
    report["replay"].update(kept=len(filtered.kept), dropped_over_max_seconds=len(filtered.dropped), per_batch=n)
    replay = _usable_audio(filtered.kept, cfg, sampling_rate, skipped_audio)
    replay = _fitting_labels(replay, sm, cfg, skipped_text)
    report["replay"]["used"] = len(replay)
    if len(replay) < n:
        raise ConfigError(f"only {len(replay)} usable replay clips in {manifests['replay'].path}; "
                          f"replay_ratio={cfg.replay_ratio} takes {n} per batch")
    return replay


def _report_skips(report: dict, warnings: list[str], skipped_audio: list[dict], skipped_text: list[dict]) -> None:
    if skipped_audio:
        report["bad_audio_skipped"] = skipped_audio
        warnings.append(f"skipped {len(skipped_audio)} unusable clip(s) (on_bad_audio='skip'), e.g. line {skipped_audio[0]['line']} "
                        f"of {skipped_audio[0]['manifest']}: field '{skipped_audio[0]['field']}': {skipped_audio[0]['reason']}")
    if skipped_text:
        report["train"]["too_long_text_skipped"] = skipped_text
        warnings.append(f"train: skipped {len(skipped_text)} clip(s) whose text is too long for the model, e.g. line {skipped_text[0]['line']}")


def _leakage(train: list[Utterance], evals: dict[str, list[Utterance]], report: dict, warnings: list[str]) -> None:
    leakage = check_leakage(train, evals)
    report["leakage"] = leakage.to_dict()
    if not leakage.is_clean:  # the summary starts with "LEAKAGE:" and has the counts; add what leaked
        examples = [f"{e['eval_id']} ~ {e['train_id']} ({e['kind']}: {e['text']!r})" for s in leakage.sets.values() for e in s.examples]
        warnings.append(f"{leakage.summary()}; e.g. {'; '.join(examples)}")


def _dev_test_overlap(dev: dict[str, list[Utterance]], tests: dict[str, list[Utterance]], report: dict, warnings: list[str]) -> None:
    """A clip (same audio bytes, whatever its name) or sentence (normalized text) in both a dev set and its test
    set lets the choice leak into the report: the counts go to the record (`dev_test_leakage`), with a warning."""
    found = dev_test_leakage(dev, tests)
    report["dev_test_leakage"] = {name: leak.to_dict()[name] for name, leak in found.items()}
    for name, leak in found.items():
        s = leak.sets[name]
        if s.leaked:
            e = s.examples[0]
            warnings.append(f"{name}: {s.leaked} of {s.n} clips share audio ({s.audio}) or a sentence ({s.text}) with the dev set "
                            f"that chooses the best checkpoint (e.g. {e['eval_id']} ~ dev {e['train_id']}, {e['kind']}: "
                            f"{e['text']!r}): the reported numbers are partly chosen on themselves")


def _eval_sources(cfg: RunConfig, manifests: dict[str, Manifest], report: dict, warnings: list[str]) -> dict[str, list[Utterance]]:
    """The clips of each eval set (dev and test), in manifest order. A domain or heldout set without a test manifest
    is split into dev and test (`test_split` of the clips for test, `devtest.split_dev_test`): the split goes to the
    record (report["test_split"]) and the test part stands as `<name>_test`, listed under the same manifest."""
    sources = {name: manifests[name].utterances for name in EVAL_SETS if name in manifests}
    report["test_split"] = {}
    for name in ("domain", "heldout"):
        if name not in manifests or f"{name}_test" in manifests or cfg.test_split <= 0:
            continue
        part = split_dev_test(manifests[name].utterances, cfg.test_split, name, str(manifests[name].path))
        sources[name], sources[f"{name}_test"] = part.dev, part.test
        manifests[f"{name}_test"] = manifests[name]  # same file (its sha256 keys the test part's baseline, with its ids)
        report[f"{name}_test"] = {"lines": len(part.test), "split_from": name, "bad_lines_skipped": 0, "bad_lines": []}
        report["test_split"][name] = part.record
        print(f"{name}: no test manifest, so {len(part.dev)} clips choose (dev) and {len(part.test)} report (test), "
              f"split by {part.record['by']} at test_split {cfg.test_split:g}")
        if part.warning:
            warnings.append(part.warning)
    return {name: sources[name] for name in EVAL_SETS if name in sources}


def _eval_subset(name: str, utts: list[Utterance], cfg: RunConfig, report: dict) -> list[Utterance]:
    """`max_eval_utterances` of an eval set, drawn with `EVAL_SUBSET_SEED` (not the run's seed), recorded."""
    picked = subset(utts, cfg.max_eval_utterances, EVAL_SUBSET_SEED)
    if len(picked) < len(utts):
        report[name]["subset"] = {"n": len(picked), "of": len(utts), "seed": EVAL_SUBSET_SEED}
    return picked
