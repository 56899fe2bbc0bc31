"""bundled:moonshine-tiny: the .ort Moonshine tiny dequantized into transformers, checked against onnxruntime
running the same files.

The port multiplies float32 activations by the dequantized weights; onnxruntime rounds each activation
that enters a quantized MatMul to 8 bits first. With that rounding emulated (a pre-hook on every Linear),
the port reproduces onnxruntime's numbers; without it, the two agree on the words, not the digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lorakit.experiment import convert_ort_moonshine as bm
from lorakit.experiment.audio import load_audio

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def port():
    from transformers import MoonshineForConditionalGeneration

    path = bm.bundled_moonshine_dir()  # converted once per test session (the session's cache is fresh)
    return path, MoonshineForConditionalGeneration.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def reference():
    return bm.OrtReference()


@pytest.fixture(scope="module")
def beckett() -> np.ndarray:
    """Real speech: a LibriVox reading of Beckett (10 s) that moonshine-voice ships, through lorakit's audio path."""
    return load_audio(bm.source_dir().parent / "beckett.wav", sampling_rate=16000, rms_target=0.075)


def _vnni() -> bool:
    """Whether onnxruntime's int8 MatMul runs exact here. Without VNNI (AVX2 only, e.g. the 2-core AMD EPYC
    machines of 2026-12-07) its u8 x s8 kernel sums pairs into saturating 16-bit lanes, so its outputs drift
    from exact int8 arithmetic (measured there: encoder 0.11 on the second window, decoder logits ~0.3 from
    step 3; the same with onnxruntime 1.31.1 and transformers 5.20) and only the looser bounds below hold."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return " avx512_vnni" in flags or " avx_vnni" in flags


def _eight_bit_activations(model: torch.nn.Module) -> list:
    """Round every Linear's input as onnxruntime's DynamicQuantizeLinear does: uint8, one scale and zero
    point per tensor, the range stretched to include 0, round half to even."""

    def hook(module, args):
        (x,) = args
        lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
        scale = (hi - lo) / 255.0
        zero = torch.clamp(torch.round(-lo / scale), 0, 255)
        return ((torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale,)

    return [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]


def test_every_converted_tensor_is_its_dequantized_source(port):
    path, model = port
    source = bm.read_source(bm.source_dir())
    state = model.state_dict()
    assert set(source) == set(state)  # proj_out included: it is tied to the embedding
    for name, array in source.items():
        assert torch.equal(state[name], torch.from_numpy(array)), name
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    # one weight by hand: the node keeps the module path; ONNX stores (in, out), transformers (out, in)
    graph = bm.OrtGraph(bm.source_dir() / bm.DECODER_FILE)
    _, _, inputs, _ = next(n for n in graph.nodes if n[1] == "/model/decoder/layers.3/encoder_attn/k_proj/MatMul_quant")
    q, scale, zero = (graph.tensors[inputs[i]] for i in (1, 3, 5))
    assert q.dtype == np.uint8 and scale.size == 1 and zero.size == 1  # 8 bits, per tensor
    by_hand = ((q.astype(np.float32) - float(zero)) * float(scale)).T
    assert np.allclose(state["model.decoder.layers.3.encoder_attn.k_proj.weight"].numpy(), by_hand, rtol=0, atol=1e-7)
    meta = (path / "lorakit_bundled.json").read_text()
    assert bm.SOURCE_PACKAGE in meta and "conversion_s" in meta


def test_reader_rejects_a_foreign_file(tmp_path):
    bad = tmp_path / "encoder_model.ort"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="encoder_model.ort: not an ONNX Runtime"):
        bm.OrtGraph(bad)


def test_conversion_is_cached(port):
    path, _ = port
    before = (path / "lorakit_bundled.json").stat().st_mtime_ns
    assert bm.bundled_moonshine_dir() == path
    assert (path / "lorakit_bundled.json").stat().st_mtime_ns == before


def test_encoder_equals_onnxruntime_once_activations_are_rounded_to_8_bits(port, reference, beckett):
    """Two half-second windows (19 encoder frames each): with onnxruntime's activation rounding emulated the
    port's encoder output is onnxruntime's (measured max |diff| 2e-6 and 0.004, the latter one rounding
    flip spread by attention); unrounded it is off by 8-bit noise (0.2). On whole clips the flips pile up:
    see test_onnxruntime_is_the_one_that_jitters."""
    _, model = port
    for clip in (beckett[:8000], beckett[8000:16000]):
        ours = lambda: model.model.encoder(torch.from_numpy(clip[None])).last_hidden_state[0].detach().numpy()  # noqa: E731
        theirs = reference.encode(clip)[0]
        plain = np.abs(ours() - theirs).max()
        hooks = _eight_bit_activations(model)
        try:
            rounded = np.abs(ours() - theirs).max()
        finally:
            for h in hooks:
                h.remove()
        print(f"encoder vs onnxruntime: rounded {rounded:.2g}, plain {plain:.2g}")
        if _vnni():
            assert rounded < 0.01 and plain > 10 * rounded, (rounded, plain)
        else:  # saturating kernels: the rounding still explains most of the gap
            assert rounded < 0.2 and plain > 1.5 * rounded, (rounded, plain)


def test_decoder_logits_equal_onnxruntime_step_by_step_once_activations_are_rounded(port, reference, beckett):
    """Fed onnxruntime's own encoder states, the port's decoder (8-bit activations emulated, one token per
    step with its key/value cache, as onnxruntime runs it) gives onnxruntime's logits: measured 0.0, 0.058
    (one rounding flip), then 1e-5 over the first six steps; a wrong or transposed tensor is off by whole logits."""
    _, model = port
    hidden = reference.encode(beckett)
    tokens, ort_logits = reference.generate(beckett)
    hooks = _eight_bit_activations(model)
    diffs, same = [], []
    try:
        with torch.no_grad():
            cache = None  # the decoder makes its key/value cache at the first step
            for step in range(6):
                out = model.model.decoder(input_ids=torch.tensor([[tokens[step]]]), encoder_hidden_states=torch.from_numpy(hidden),
                                          past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                logits = model.proj_out(out.last_hidden_state)[0, -1].numpy()
                diffs.append(float(np.abs(logits - ort_logits[step]).max()))
                same.append(int(logits.argmax()) == int(ort_logits[step].argmax()))
    finally:
        for h in hooks:
            h.remove()
    assert all(same), same
    if _vnni():
        assert max(diffs) < 0.2 and sorted(diffs)[3] < 1e-3, diffs  # most steps exact; a rounding flip moves one
    else:  # saturating kernels (see _vnni): the first steps exact, later ones within a logit
        assert sorted(diffs)[1] < 1e-3 and max(diffs) < 1.0, diffs


def test_onnxruntime_is_the_one_that_jitters(port, reference, beckett):
    """Why the unrounded port and onnxruntime differ on long clips: onnxruntime's 8-bit activations make its
    own output jump when the input moves by a millionth of its RMS (far below hearing); the port's barely
    moves. The port-vs-onnxruntime gap is of that jitter's size (measured on beckett.wav: gap 0.52, jitter
    0.45, port's own 0.0002)."""
    _, model = port
    noisy = beckett + np.random.default_rng(0).standard_normal(beckett.shape).astype(np.float32) * np.float32(0.075e-6)
    with torch.no_grad():
        ours, ours_noisy = (model.model.encoder(torch.from_numpy(x[None])).last_hidden_state[0].numpy() for x in (beckett, noisy))
    theirs, theirs_noisy = reference.encode(beckett)[0], reference.encode(noisy)[0]
    ort_jitter, port_jitter = np.abs(theirs_noisy - theirs).max(), np.abs(ours_noisy - ours).max()
    gap = np.abs(ours - theirs).max()
    assert port_jitter < 0.01 < 0.1 < ort_jitter and gap < 3 * ort_jitter, (port_jitter, ort_jitter, gap)


def test_same_words_as_onnxruntime_on_real_speech(reference, beckett):
    """beckett.wav, greedy, through lorakit's SpeechModel: the same token ids as onnxruntime on the .ort files."""
    from lorakit.experiment.models import load_model

    sm = load_model(bm.BUNDLED_MOONSHINE)
    x = torch.from_numpy(beckett[None])
    ids = sm.generate({"input_values": x, "attention_mask": torch.ones_like(x, dtype=torch.long)}, max_new_tokens=448)
    tokens, _ = reference.generate(beckett)
    assert ids[0].tolist() == tokens
    assert sm.decode(ids) == ["Ever tried, ever failed, no matter, try again, fail again, fail better."]
