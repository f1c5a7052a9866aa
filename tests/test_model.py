"""The network's own pieces, on small random inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from whisper_core.kernels import linear
from whisper_core.model import ModelDimensions, TokenEmbedding, Whisper


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


def _small_decoder(seed: int):
    dims = ModelDimensions(80, 20, 32, 4, 1, 300, 64, 32, 4, 2)
    decoder = Whisper(dims).decoder
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return decoder


def test_rows_that_share_a_prompt_decode_as_if_each_held_a_copy():
    """Beams keep their window's prompt once (`share_prompt`): every step gives what each row would get
    decoding alone with the whole prompt in its own cache, left padding and a forking beam included."""
    decoder = _small_decoder(4)
    generator = torch.Generator().manual_seed(5)
    audio = torch.randn(2, 20, 32, generator=generator)
    prompts = [[1, 2, 3, 4, 5], [6, 7, 8]]  # the second is left-padded by two
    group, steps = 3, 4
    new_tokens = torch.randint(10, 300, (steps, 2 * group), generator=generator)
    with torch.inference_mode():
        state = decoder.start(audio, 2, torch.tensor([0, 2]), 5 + steps)
        decoder(torch.tensor([prompts[0], [0, 0, *prompts[1]]]), state)
        state.share_prompt(group)
        shared = []
        for step in range(steps):
            if step == 2:  # a beam forks: row 1 continues row 0's history
                state.copy_rows(torch.tensor([1]), torch.tensor([0]))
            shared.append(decoder(new_tokens[step][:, None], state)[:, 0])
        for row in range(2 * group):
            alone = decoder.start(audio[row // group : row // group + 1], 1, torch.tensor([0]), 5 + steps)
            decoder(torch.tensor([prompts[row // group]]), alone)
            for step in range(steps):
                source = 0 if row == 1 and step < 2 else row
                hidden = decoder(new_tokens[step][source : source + 1, None], alone)[:, 0]
                if source == row:
                    torch.testing.assert_close(shared[step][row : row + 1], hidden, rtol=1e-4, atol=1e-4)
