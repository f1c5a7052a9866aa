"""The CPU's int8 mode: the quantization itself on small inputs, the same output on AVX2 and AVX-512
kernels, then real speech through a quantized base model, which must say what the float32 model says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from whisper_core.loading import load_network
from whisper_core.metrics import error_rate
from whisper_core.model import Linear
from whisper_core.quantize import FULL_LEVELS, SAFE_LEVELS, Int8Linear, Int8TokenEmbedding, quantize_weight


def _layer(n_in: int, n_out: int, seed: int) -> Linear:
    generator = torch.Generator().manual_seed(seed)
    layer = Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, generator=generator) / 16)
        layer.bias.copy_(torch.randn(n_out, generator=generator))
    return layer


def test_quantize_weight_per_channel():
    weight = torch.randn(7, 64, generator=torch.Generator().manual_seed(0))
    weight[3] = 0.0  # an all-zero row must not divide by zero
    for levels in (FULL_LEVELS, SAFE_LEVELS):
        q = quantize_weight(weight, levels)
        values, scale = q.int_repr(), q.q_per_channel_scales().float()[:, None]
        assert values.abs().max() == levels and torch.all(values[3] == 0)
        assert torch.all((values.float() * scale - weight).abs() <= scale / 2 + 1e-7)


@pytest.mark.parametrize("levels", [FULL_LEVELS, SAFE_LEVELS])
@pytest.mark.parametrize("shape", [(1, 256), (5, 256), (2, 3, 256), (300, 256)])
def test_int8_linear_is_close_to_float(shape, levels):
    layer = _layer(256, 96, seed=1)
    # Rows of very different sizes: each is quantized on its own scale.
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    x = x * torch.logspace(-3, 2, x.shape[-2] if x.dim() > 1 else 1)[:, None]
    with torch.inference_mode():
        expected = layer(x)
        ours = Int8Linear(layer, levels)(x)
    assert ours.shape == expected.shape and ours.dtype == torch.float32
    relative = (ours - expected).norm(dim=-1) / expected.norm(dim=-1)
    assert relative.max() < 0.03, relative


def test_int8_token_table_looks_up_and_scores():
    table = torch.nn.Embedding(1000, 64)
    with torch.no_grad():
        table.weight.copy_(torch.randn(1000, 64, generator=torch.Generator().manual_seed(3)))
    ours = Int8TokenEmbedding(table, FULL_LEVELS)
    tokens = torch.tensor([[0, 5, 999]])
    assert torch.allclose(ours(tokens), table.weight[tokens], atol=table.weight.abs().max().item() / 127)
    hidden = torch.randn(4, 64, generator=torch.Generator().manual_seed(4))
    expected = hidden @ table.weight.T
    assert ((ours.project(hidden) - expected).norm() / expected.norm()) < 0.03


_KERNEL_OUTPUT = """
import json, sys, torch
sys.path.insert(0, {root!r})
from tests.test_int8 import _layer
from whisper_core.quantize import Int8Linear, weight_levels
layer = _layer(512, 64, seed=5)
x = torch.randn(40, 512, generator=torch.Generator().manual_seed(6)) * 3
with torch.inference_mode():
    out = {{str(levels): Int8Linear(layer, levels)(x).tolist() for levels in {levels}}}
print(json.dumps({{"chosen": weight_levels(), **out}}))
"""


def _kernel_output(instructions: str | None, levels: tuple[int, ...]) -> dict[str, torch.Tensor | int]:
    env = {k: v for k, v in os.environ.items() if k != "FBGEMM_ENABLE_INSTRUCTIONS"}
    if instructions:
        env["FBGEMM_ENABLE_INSTRUCTIONS"] = instructions  # FBGEMM's own switch to a smaller instruction set
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _KERNEL_OUTPUT.format(root=root, levels=levels)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return {k if k == "chosen" else int(k): v if k == "chosen" else torch.tensor(v) for k, v in json.loads(out).items()}


def test_seven_bit_weights_give_the_same_output_on_avx2_kernels():
    """FBGEMM's AVX2 kernels add pairs of products in 16 bits: with weights of at most 63 nothing overflows,
    so they give exactly what its AVX-512 (VNNI) kernels give. On a CPU with VNNI, full-range weights
    under the AVX2 kernels overflow and differ: that is why they are kept for VNNI, and the model asks the
    kernels which they are."""
    native = _kernel_output(None, (FULL_LEVELS, SAFE_LEVELS))
    avx2 = _kernel_output("AVX2", (FULL_LEVELS, SAFE_LEVELS))
    assert torch.equal(native[SAFE_LEVELS], avx2[SAFE_LEVELS])
    assert avx2["chosen"] == SAFE_LEVELS
    if torch.cpu.get_capabilities().get("avx512_vnni"):
        assert native["chosen"] == FULL_LEVELS
        assert not torch.equal(native[FULL_LEVELS], avx2[FULL_LEVELS])


@pytest.fixture(scope="module")
def int8_model():
    import whisper_core

    return whisper_core.load_model(int8=True)


def test_int8_model_is_smaller(int8_model):
    """Every linear layer is int8 (packed for FBGEMM: neither parameters nor buffers, so counted here)."""
    net = int8_model.net
    with torch.device("meta"):
        float32_bytes = 4 * sum(p.numel() for p in type(net)(net.dims).parameters())
    int8_bytes = sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])
    for module in net.modules():
        if isinstance(module, Int8Linear | Int8TokenEmbedding):
            weight, _ = torch.ops.quantized.linear_unpack(module.packed)
            int8_bytes += weight.numel() + 4 * weight.shape[0]
        if isinstance(module, Int8TokenEmbedding):
            int8_bytes += module.values.numel() + 4 * module.token_scale.numel()
    assert int8_bytes < float32_bytes / 2.5
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
