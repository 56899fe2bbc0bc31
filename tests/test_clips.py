"""A clip's spectrogram: the same sentence through the demo corpus's full-band and telephone channels
(espeak-ng/flite and sox, as `make demo` renders them) must look different where the channel differs."""

from __future__ import annotations

import base64
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from lorakit.analysis import clips
from lorakit.demo import corpus


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> dict[str, clips.Spectrogram]:
    """One demo sentence rendered by the corpus builder through a clean and a phone channel."""
    corpus.check_binaries()
    out = tmp_path_factory.mktemp("clips")
    drawn = {}
    for channel in ("clean", "phone"):
        clip = corpus.PlannedClip("domain", f"audio/{channel}.wav", "Start amoxicillin twice daily.",
                                  corpus.Voice("flite", "kal16", channel), speed=1.0, pitch=50, noise_seed=0)
        corpus.render(clip, out)
        drawn[channel] = clips.clip_view(out / clip.path, clip.path)
    return drawn


def _png_of(view_html: str) -> bytes:
    match = re.search(r'<img class="lorakit-spectrogram" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', view_html)
    assert match, view_html[:200]
    return base64.b64decode(match.group(1))


def test_the_phone_band_shows_in_the_spectrogram(channels):
    clean, phone = channels["clean"], channels["phone"]
    assert clean.sample_rate == phone.sample_rate == corpus.SAMPLE_RATE
    assert clean.mel_hz.max() <= corpus.SAMPLE_RATE / 2  # the axis reaches the Nyquist frequency
    # the telephone channel (300-3400 Hz, 8 kHz round trip) leaves nothing above 4 kHz; speech does
    assert clean.energy_above(4000) > 1e-4
    assert phone.energy_above(4000) < 1e-6
    assert phone.energy_above(4000) < clean.energy_above(4000) / 100
    png_clean, png_phone = _png_of(clean.html()), _png_of(phone.html())
    assert png_clean.startswith(b"\x89PNG") and png_phone.startswith(b"\x89PNG")
    assert png_clean != png_phone


def test_a_missing_or_unreadable_clip_is_a_note_not_a_traceback(tmp_path):
    assert clips.clip_view(None, "data/demo/domain/gone.wav").html() == (
        '<i class="lorakit-clip-note">audio not found: data/demo/domain/gone.wav</i>')
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    assert "audio unreadable: bad.wav" in clips.clip_view(bad, "bad.wav").html()
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    assert "audio unreadable: empty.wav (no samples)" in clips.clip_view(empty, "empty.wav").html()


def test_librosa_loads_only_when_a_clip_is_drawn():
    """The analysis notebook's imports stay light: librosa comes in with the first spectrogram."""
    code = ("import sys; from lorakit.analysis import breakdown, browser, clips, plots, runs; "
            "print('librosa' in sys.modules, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
