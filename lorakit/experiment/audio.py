"""Audio loading: the one preprocessing path.

Training, evaluation and inference all call `load_audio`, so a clip becomes the same array
everywhere: read -> mono -> resample to 16 kHz -> RMS-normalize. Any difference between the
paths (say, normalizing at train time but not at eval time) silently shifts WER, which is why
there is exactly one function and no options beyond rate and level.

A clip quieter than `SILENCE_FLOOR_DBFS` (RMS, before normalization) is refused, never scaled up:
normalizing a 16-bit dither floor (RMS ~3e-5, about -90 dBFS) to 0.075 would multiply it ~2,500x and
hand the model loud noise paired with a transcript, which teaches it to hallucinate text on silence.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000  # Hz; what Whisper and Moonshine expect
RMS_TARGET = 0.075  # linear amplitude (about -22.5 dBFS)
# dBFS RMS: 20*log10(RMS) with full scale 1.0 (so a full-scale sine reads -3 dBFS). Speech recordings sit
# near -20 to -40; the quietest clip of the demo corpus and the real-speech set reads -32.6 (beckett.wav).
SILENCE_FLOOR_DBFS = -60.0
SILENCE_FLOOR_RMS = 10 ** (SILENCE_FLOOR_DBFS / 20)  # linear amplitude (0.001)

PathLike = str | os.PathLike


class AudioError(ValueError):
    """A clip that cannot be used; the message names the file and what is wrong."""

    def __init__(self, message: str, path: PathLike | None = None):
        # One positional argument, like ValueError, so that torch's DataLoader can re-raise
        # it from a worker process as an AudioError instead of a bare RuntimeError.
        super().__init__(message)
        self.path = None if path is None else str(path)


def _fail(path: PathLike, problem: str) -> AudioError:
    return AudioError(f"{path}: {problem}", path=path)


def load_audio(
    path: PathLike, sampling_rate: int = SAMPLE_RATE, rms_target: float = RMS_TARGET
) -> np.ndarray:
    """Read any file soundfile supports and return float32 mono samples at `sampling_rate`,
    RMS-normalized to `rms_target`.

    Raises AudioError for a missing, unreadable or empty file, one holding NaN/inf samples, or one
    quieter than `SILENCE_FLOOR_DBFS` (RMS of the mono, resampled signal, before normalization).
    """
    p = Path(path)
    if not p.is_file():
        raise _fail(path, "audio file not found" if not p.exists() else "not a regular file")
    if p.stat().st_size == 0:
        raise _fail(path, "zero-length audio (empty file, 0 bytes)")
    try:
        # always_2d: one code path for mono and multi-channel files (frames x channels).
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
        raise _fail(path, f"unreadable or corrupt audio ({e})") from e
    if data.shape[0] == 0:
        raise _fail(path, "zero-length audio (no samples)")
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        # Float files can hold NaN/inf; one of them turns the whole batch loss into NaN.
        raise _fail(path, f"{bad} non-finite samples (NaN/inf)")

    x = data.mean(axis=1, dtype=np.float32)  # mono = mean of channels
    if file_rate != sampling_rate:
        x = soxr.resample(x, file_rate, sampling_rate)
        if x.size == 0:  # e.g. a single sample at 44.1 kHz rounds down to nothing
            raise _fail(path, f"too short to resample from {file_rate} to {sampling_rate} Hz")
    level = rms_dbfs(x)
    if level < SILENCE_FLOOR_DBFS:
        # a transcript paired with (amplified) silence teaches the model to hallucinate it
        what = "silent audio (every sample is zero)" if level == -np.inf else f"near-silent audio (RMS {level:.1f} dBFS)"
        raise _fail(path, f"{what}, under the {SILENCE_FLOOR_DBFS:g} dBFS floor: RMS normalization would only amplify noise")
    return rms_normalize(x, target=rms_target)


def rms_dbfs(x: np.ndarray) -> float:
    """The RMS level of `x` in dBFS (20*log10(RMS), full scale 1.0); -inf for silence or no samples."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if np.size(x) else 0.0
    return 20 * float(np.log10(rms)) if rms > 0 else -np.inf


def rms_normalize(x: np.ndarray, target: float = RMS_TARGET, floor: float = SILENCE_FLOOR_RMS) -> np.ndarray:
    """Scale `x` so its RMS equals `target`; return float32.

    Input quieter than `floor` (linear RMS; `load_audio` refuses such files, but a window cut from a
    long clip can be one) comes back unchanged: scaling it would amplify nothing but noise, or divide
    by ~0 and produce NaN. The result is not clipped to [-1, 1]: at 0.075 RMS only
    clips with extreme peak-to-RMS ratios exceed 1, the models take float input, and clipping
    would add distortion that training never saw.
    """
    if not (np.isfinite(target) and target > 0):
        raise ValueError(f"rms target must be a positive number, got {target!r}")
    x = np.asarray(x, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    if not np.isfinite(rms):
        raise ValueError("cannot RMS-normalize non-finite samples (NaN/inf)")
    if rms < floor:
        return x
    return (x * np.float32(target / rms)).astype(np.float32, copy=False)


def audio_sha256(path: PathLike) -> str:
    """SHA-256 of the file's bytes, for leakage checks and cache keys.

    Byte identity finds copied clips, not re-encoded ones; that is enough to catch the usual
    leak (the same file listed in two manifests) without decoding every clip.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise _fail(path, f"cannot read audio file ({e.strerror or e})") from e
    return digest.hexdigest()
