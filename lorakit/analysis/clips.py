"""One clip on screen: find its audio file and draw its log-mel spectrogram, so a researcher reading
an error sees the channel behind it (a telephone band stops near 3.4 kHz, noise fills the gaps).

The audio is read with soundfile directly, at the file's own rate: the analysis side may not import
`experiment.audio`, and a picture needs neither the model's resampling nor its RMS normalization (a
file recorded at 8 kHz shows as such: nothing above 4 kHz). librosa computes and draws the
spectrogram; it is imported inside the functions that draw (it brings scipy and numba, about a
second), so the analysis notebook starts without it and only a cell that shows a clip pays.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..env import project_root
from .runs import Run

PathLike = str | os.PathLike

MAX_SECONDS = 30.0  # s: the longest stretch drawn; a longer recording is drawn from its start
N_FFT = 512  # samples per STFT window (32 ms at 16 kHz)
HOP = 160  # samples between frames (10 ms at 16 kHz, Whisper's hop)
N_MELS = 80  # mel bands, as Whisper's log-mel input
TOP_DB = 80.0  # dB: the quietest level drawn below the clip's loudest bin
FIG_INCHES = (3.6, 1.5)  # width, height: small enough to sit beside aligned text in a table row
DPI = 72
PNG_COLOURS = 64  # the picture is quantized to this palette: ~11 KB instead of ~35 KB per clip
HZ_TICKS = (500, 1000, 2000, 4000, 8000)  # frequency ticks (those below the clip's Nyquist)


def resolve_audio(path: str | None, run: Run, split: str, root: PathLike | None = None) -> Path | None:
    """The audio file of a prediction: absolute as written, else relative to the manifest's
    folder (how manifests resolve paths), the project root, or the working directory."""
    if not path:
        return None
    p = Path(path)
    if p.is_absolute():
        return p if p.is_file() else None
    root = Path(root) if root else project_root()
    manifest = run.manifest_path(split)  # root / an absolute manifest path is that path
    bases = ([(root / manifest).parent] if manifest else []) + [root, Path.cwd()]
    return next((b / p for b in bases if (b / p).is_file()), None)


@dataclass(frozen=True)
class ClipNote:
    """What stands in for a clip that cannot be drawn (not found, unreadable, empty)."""

    text: str

    def html(self) -> str:
        return f'<i class="lorakit-clip-note">{html.escape(self.text)}</i>'


@dataclass(frozen=True, eq=False)
class Spectrogram:
    """The log-mel spectrogram of one clip: the power array it was drawn from, and the picture."""

    path: Path
    sample_rate: int  # Hz, the file's own
    seconds: float  # duration drawn (at most MAX_SECONDS)
    power: np.ndarray  # (N_MELS, frames) mel power spectrogram
    mel_hz: np.ndarray  # (N_MELS,) centre frequency of each band, Hz
    png: bytes

    def energy_above(self, hz: float) -> float:
        """Fraction of the clip's power in the bands centred above `hz` (a phone band has ~none above 4 kHz)."""
        total = float(self.power.sum())
        return float(self.power[self.mel_hz > hz].sum()) / total if total > 0 else 0.0

    def html(self) -> str:
        src = base64.b64encode(self.png).decode("ascii")
        return (f'<img class="lorakit-spectrogram" src="data:image/png;base64,{src}" '
                f'alt="log-mel spectrogram of {html.escape(self.path.name)}" '
                f'title="{html.escape(self.path.name)}: {self.sample_rate} Hz, {self.seconds:.1f} s">')


def read_clip(path: PathLike, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """Mono float32 samples of the first `max_seconds` of a file, and its sample rate (no resampling)."""
    with sf.SoundFile(str(path)) as f:
        rate = f.samplerate
        samples = f.read(frames=int(max_seconds * rate), dtype="float32", always_2d=True)
    return samples.mean(axis=1), rate


def _png(db: np.ndarray, rate: int) -> bytes:
    """librosa's specshow of a dB mel spectrogram: time in s, frequency in Hz (mel-spaced)."""
    import librosa.display
    from PIL import Image  # matplotlib's own dependency

    fig = Figure(figsize=FIG_INCHES, dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    librosa.display.specshow(db, sr=rate, hop_length=HOP, x_axis="s", y_axis="mel",
                             fmax=rate / 2, cmap="magma", ax=ax)
    ax.set_yticks([t for t in HZ_TICKS if t <= rate / 2])
    ax.set_xlabel("")
    ax.set_ylabel("Hz")
    fig.tight_layout(pad=0.2)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    buf = io.BytesIO()
    Image.fromarray(rgb).quantize(PNG_COLOURS).save(buf, format="png", optimize=True)
    return buf.getvalue()


def spectrogram(path: PathLike, max_seconds: float = MAX_SECONDS) -> Spectrogram:
    """Compute and draw the log-mel spectrogram of one audio file (cached per file and modification)."""
    st = os.stat(path)
    return _spectrogram(str(path), st.st_mtime_ns, st.st_size, max_seconds)


@functools.lru_cache(maxsize=512)  # ~11 KB of PNG and ~0.2 MB of power per clip
def _spectrogram(path: str, _mtime_ns: int, _size: int, max_seconds: float) -> Spectrogram:
    import librosa

    samples, rate = read_clip(path, max_seconds)
    if samples.size == 0:
        raise ValueError("no samples")
    power = librosa.feature.melspectrogram(y=samples, sr=rate, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
                                           fmax=rate / 2)
    db = librosa.power_to_db(power, ref=np.max, top_db=TOP_DB)
    return Spectrogram(Path(path), rate, samples.size / rate, power,
                       librosa.mel_frequencies(n_mels=N_MELS, fmax=rate / 2), _png(db, rate))


def clip_view(path: Path | None, written: str | None) -> Spectrogram | ClipNote:
    """The spectrogram of a resolved audio file, or a visible note naming the path the predictions
    wrote when there is no file to draw (a moved corpus is a note in the table, not a traceback)."""
    if path is None:
        return ClipNote(f"audio not found: {written}")
    try:
        return spectrogram(path)
    except (OSError, RuntimeError, ValueError) as e:  # soundfile raises LibsndfileError (a RuntimeError)
        return ClipNote(f"audio unreadable: {written} ({e})")
