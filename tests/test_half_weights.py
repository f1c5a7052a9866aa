"""Float16 weights with float32 arithmetic on the CPU: exact on float16 values, float32 kept elsewhere,
and the loaded base runs its decoder and vocabulary projection that way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from whisper_core import half_weights
from whisper_core.model import ModelDimensions, TokenEmbedding, Whisper

pytestmark = pytest.mark.skipif(not half_weights.available(), reason="this torch build has no FBGEMM")

TINY = ModelDimensions(n_mels=80, n_audio_ctx=20, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
                       n_vocab=300, n_text_ctx=16, n_text_state=64, n_text_head=4, n_text_layer=2)


def _float16_values(*shape: int, seed: int) -> torch.Tensor:
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) / 8).half().float()


def test_exact_float16_is_recognised():
    values = _float16_values(40, 8, seed=0)
    assert half_weights.is_exact_float16(values.half())
    assert half_weights.is_exact_float16(values)
    assert half_weights.is_exact_float16(values, block=3)  # checked in blocks of rows
    nudged = values.clone()
    nudged[37, 5] += 1e-6  # below float16's step at that size
    assert not half_weights.is_exact_float16(nudged, block=3)
    assert not half_weights.is_exact_float16(torch.full((2, 2), 70000.0))  # beyond float16's range


@pytest.mark.parametrize("shape", [(1, 256), (5, 256), (2, 3, 256), (300, 256)])
def test_half_linear_computes_in_float32(shape):
    """Against the same product in float64: float32's rounding, not float16's (which would be ~1e-3)."""
    layer = nn.Linear(256, 96)
    with torch.no_grad():
        layer.weight.copy_(_float16_values(96, 256, seed=1))
        layer.bias.copy_(torch.randn(96))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ours = half_weights.HalfLinear(layer)(x)
        exact = nn.functional.linear(x.double(), layer.weight.double(), layer.bias.double())
    assert ours.shape == exact.shape and ours.dtype == torch.float32
    assert (ours.double() - exact).abs().max() < 1e-5


def test_half_token_embedding_looks_up_and_scores():
    embedding = TokenEmbedding(300, 64, _weight=_float16_values(300, 64, seed=3))
    table = half_weights.HalfTokenEmbedding(embedding)
    tokens = torch.tensor([[0, 299, 17]])
    hidden = torch.randn(2, 64, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        assert torch.equal(table(tokens), embedding.weight[tokens])
        scores = table.project(hidden)
    assert (scores.double() - hidden.double() @ embedding.weight.double().T).abs().max() < 1e-5


def test_blocks_of_the_token_table_score_as_one(monkeypatch):
    monkeypatch.setattr(half_weights, "_TABLE_BLOCK_ROWS", 128)  # 300 rows: three blocks
    embedding = TokenEmbedding(300, 64, _weight=_float16_values(300, 64, seed=5))
    table = half_weights.HalfTokenEmbedding(embedding)
    assert len(table.packed) == 3
    hidden = torch.randn(3, 64)
    with torch.inference_mode():
        scores = table.project(hidden)
    torch.testing.assert_close(scores, hidden @ embedding.weight.T, rtol=1e-5, atol=1e-5)


def _tiny_net(seed: int) -> Whisper:
    torch.manual_seed(seed)
    net = Whisper(TINY).eval()
    with torch.no_grad():
        for tensor in [*net.parameters(), *net.buffers()]:  # some are left uninitialised by the constructors
            tensor.copy_((torch.randn_like(tensor) / 8).half().float())
    return net


def test_packed_network_gives_the_float32_network_logits():
    reference = _tiny_net(6)
    packed = _tiny_net(6)
    packed.decoder.blocks[1].mlp[2].weight.data += 1e-7  # not float16 any more: stays float32
    reference.decoder.blocks[1].mlp[2].weight.data += 1e-7
    half_weights.pack_half_weights(packed)
    linears = [m for m in packed.decoder.modules() if isinstance(m, nn.Linear)]
    assert linears == [packed.decoder.blocks[1].mlp[2]]
    assert not any(isinstance(m, half_weights.HalfLinear) for m in packed.encoder.modules())
    assert isinstance(packed.decoder.token_embedding, half_weights.HalfTokenEmbedding)
    mel = torch.randn(1, 80, 2 * TINY.n_audio_ctx)
    tokens = torch.tensor([[1, 5, 9, 250]])
    with torch.inference_mode():
        outputs = []
        for net in (reference, packed):
            features = net.encoder(mel)
            state = net.decoder.start(features, 1, torch.zeros(1, dtype=torch.long), 8)
            outputs.append(net.decoder.logits(net.decoder(tokens, state)))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)


def test_the_loaded_base_decodes_on_packed_float16(model):
    net = model.net
    assert not any(isinstance(m, nn.Linear) for m in net.decoder.modules())
    assert not any(isinstance(m, half_weights.HalfLinear) for m in net.encoder.modules())
    assert isinstance(net.decoder.token_embedding, half_weights.HalfTokenEmbedding)
    assert net.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in [*net.parameters(), *net.buffers()] if t.is_floating_point())
