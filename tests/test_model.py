"""The network's own pieces, on small random inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from whisper_core.model import ModelDimensions, TokenEmbedding, Whisper, linear


@pytest.mark.parametrize("shape", [(1, 512), (5, 512), (2, 3, 512), (8, 1, 512), (9, 512), (1500, 512)])
@pytest.mark.parametrize("n_out", [384, 512, 1536])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_torch(shape, n_out, with_bias):
    """Each CPU path (weight on the left for a few rows against a tall weight, oneDNN otherwise) computes
    the same float32 product as `F.linear`, and hands back a contiguous tensor: attention falls back to a
    slower kernel on strided queries."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator)
    weight = torch.randn(n_out, 512, generator=generator) / 512**0.5
    bias = torch.randn(n_out, generator=generator) if with_bias else None
    with torch.inference_mode():
        ours = linear(x, weight, bias)
    expected = F.linear(x, weight, bias)
    assert ours.shape == expected.shape
    assert ours.is_contiguous()
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_linear_keeps_gradients():
    """With autograd on (training or a gradient check) the product still carries a gradient."""
    x = torch.randn(2, 8, requires_grad=True)
    weight = torch.randn(4, 8)
    linear(x, weight).sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(0).expand(2, 8))


@pytest.mark.parametrize("shape", [(1, 64), (2, 64), (5, 64), (3, 1, 64), (12, 64)])
def test_vocabulary_projection_matches_torch(shape):
    """Scores against the token table, by whichever kernel suits the row count, are hidden @ table.T."""
    generator = torch.Generator().manual_seed(2)
    table = TokenEmbedding(1000, 64, _weight=torch.randn(1000, 64, generator=generator))
    hidden = torch.randn(shape, generator=generator)
    with torch.inference_mode():
        scores = table.project(hidden)
    torch.testing.assert_close(scores, hidden @ table.weight.T, rtol=1e-5, atol=1e-5)


def test_a_new_network_is_initialised():
    """Random networks (tests, the GPU benchmark) get a real random token table, not uninitialised memory."""
    dims = ModelDimensions(80, 1500, 64, 2, 1, 1000, 448, 64, 2, 1)
    table = Whisper(dims).decoder.token_embedding.weight
    assert torch.isfinite(table).all() and 0.5 < table.std() < 1.5
