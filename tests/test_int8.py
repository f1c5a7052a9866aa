"""The CPU's int8 mode: the quantization itself on small inputs, then real speech through a quantized
base model, which must say what the float32 model says."""

from __future__ import annotations

import pytest
import torch

from whisper_core.loading import load_network
from whisper_core.metrics import error_rate
from whisper_core.model import Linear
from whisper_core.quantize import Int8Linear, quantize_rows


def test_quantize_rows_round_trip():
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(0))
    x[3] = 0.0  # an all-zero row must not divide by zero
    values, scale = quantize_rows(x)
    assert values.dtype == torch.int8 and values.abs().max() <= 127
    assert torch.all(values[3] == 0)
    assert torch.all((values.float() * scale - x).abs() <= scale / 2 + 1e-7)


@pytest.mark.parametrize("shape", [(1, 256), (5, 256), (2, 3, 256), (300, 256)])
def test_int8_linear_is_close_to_float(shape):
    generator = torch.Generator().manual_seed(1)
    layer = Linear(256, 96)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(96, 256, generator=generator) / 16)
        layer.bias.copy_(torch.randn(96, generator=generator))
    x = torch.randn(shape, generator=generator)
    with torch.inference_mode():
        expected = layer(x)
        ours = Int8Linear(layer)(x)
    assert ours.shape == expected.shape and ours.dtype == torch.float32
    relative = (ours - expected).norm() / expected.norm()
    assert relative < 0.02, relative


@pytest.fixture(scope="module")
def int8_model():
    import whisper_core

    return whisper_core.load_model(int8=True)


def test_int8_model_is_smaller(int8_model):
    net = int8_model.net
    with torch.device("meta"):
        float32_bytes = 4 * sum(p.numel() for p in type(net)(net.dims).parameters())
    int8_bytes = sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])
    assert int8_bytes < float32_bytes / 3
    assert not any(isinstance(m, Linear) for m in int8_model.net.modules())


def test_int8_only_on_the_cpu():
    with pytest.raises(ValueError, match="int8 mode is for the CPU"):
        load_network(device="cuda", int8=True)


def test_int8_transcribes_like_float32(model, int8_model, shared):
    """Both tasks on two shared files: the quantized model's words are the float32 model's, nearly all."""
    for name, language in (("en_jfk_ask_not.flac", "en"), ("es_arenas_blanquecinas.wav", "es")):
        path = str(shared / "audio" / name)
        expected = model.transcribe_and_translate(path, temperature=0.0)
        ours = int8_model.transcribe_and_translate(path, temperature=0.0)
        assert ours["transcribe"]["language"] == language
        for task in ("transcribe", "translate"):
            lang = language if task == "transcribe" else "en"
            assert error_rate(expected[task]["text"], ours[task]["text"], lang) <= 0.1, (name, task)


def test_int8_warns_where_the_cpu_lacks_vnni(monkeypatch):
    """torch's int8 product runs plain loops without AVX-512 VNNI: the user is told to leave it off."""
    from whisper_core import loading

    monkeypatch.setattr(loading, "fast_on_this_cpu", lambda: False)
    with pytest.warns(RuntimeWarning, match="no AVX-512 VNNI"):
        load_network(int8=True)
