"""The optional int8 mode for the CPU: every linear layer's weights in int8 with a scale per output
channel, activations quantized per row as they arrive, products summed in int32 by FBGEMM, which has
kernels for AVX2 and AVX-512 alike. It reads a quarter of the bytes the float32 decoder reads per token and
runs the encoder's matrix products faster. Attention, convolutions and layer norms stay in float32.

Without AVX-512 VNNI, FBGEMM adds each pair of 8-bit products in 16 bits first, which overflows with
full-range weights (an activation of 255 times a weight of 127, twice, is past 32,767). There the weights
take 7 bits (up to 63), so that no pair can overflow and every sum is exact, as with VNNI: 7-bit weights
give the same output on both kinds of CPU, and a CPU with VNNI uses all 8."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor, nn

from .model import Linear, TokenEmbedding, Whisper

FULL_LEVELS = 127  # weights as int8, where VNNI sums the products in 32 bits
SAFE_LEVELS = 63  # weights as 7-bit values, where pairs of products are added in 16 bits


@functools.lru_cache(maxsize=1)
def weight_levels() -> int:
    """The largest weight value FBGEMM's kernels here sum exactly (see the module's docstring), found by
    asking them: 64 products of 255 and 127 overflow where pairs are added in 16 bits. The kernels, not the
    CPU's flags, decide, and FBGEMM may be told to use fewer instructions than the CPU has."""
    ones = torch.ones(1, 64)
    exact = torch.ops.quantized.linear_dynamic(ones, pack(ones, FULL_LEVELS), False)
    return FULL_LEVELS if abs(exact.item() - 64) < 1 else SAFE_LEVELS


def quantize_weight(weight: Tensor, levels: int) -> Tensor:
    """Symmetric int8 per output channel, as the quantized tensor FBGEMM packs. A row of zeros gets scale 1
    so that nothing divides by zero. The scales are found a block of rows at a time: at once, the 106 MB
    float32 token table would have a temporary of its own size beside it."""
    weight = weight.detach().float()
    scale = torch.cat([rows.abs().amax(dim=1) for rows in weight.split(4096)]) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    with warnings.catch_warnings():
        # torch marks its quantized tensor type deprecated; FBGEMM's packing takes nothing else.
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        return torch.quantize_per_channel(weight, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0,
                                          torch.qint8)


def pack(weight: Tensor, levels: int):
    return torch.ops.quantized.linear_prepack(quantize_weight(weight, levels), None)


def int8_product(x: Tensor, packed) -> Tensor:
    """`x @ weight.T` through FBGEMM with each row of `x` quantized on its own scale: every row is divided
    by its largest magnitude first, so that FBGEMM's one scale per call gives each row its full 8 bits, and
    multiplied back after."""
    shape = x.shape
    rows = x.reshape(-1, shape[-1])
    if rows.shape[0] == 1:  # a decoding step of one row: FBGEMM's scale is already the row's own
        return torch.ops.quantized.linear_dynamic(x, packed, False)
    peak = rows.abs().amax(dim=-1, keepdim=True)
    peak = torch.where(peak > 0, peak, torch.ones_like(peak))
    y = torch.ops.quantized.linear_dynamic(rows / peak, packed, False).mul_(peak)
    return y.reshape(*shape[:-1], y.shape[-1])


class Int8Linear(nn.Module):
    """A linear layer whose weights are stored in int8, packed for FBGEMM; float32 in and out."""

    def __init__(self, linear: nn.Linear, levels: int):
        super().__init__()
        # Plain attributes, not buffers: `Module.float()` must not touch them.
        self.packed = pack(linear.weight, levels)
        self.bias = None if linear.bias is None else linear.bias.detach().float()

    def forward(self, x: Tensor) -> Tensor:
        y = int8_product(x, self.packed)
        return y if self.bias is None else y.add_(self.bias)


class Int8TokenEmbedding(nn.Module):
    """The tied token table in int8, one scale per token: its values are looked up for the input tokens,
    and the same values, packed, score hidden states for the output."""

    def __init__(self, embedding: TokenEmbedding, levels: int):
        super().__init__()
        table = quantize_weight(embedding.weight, levels)
        self.packed = torch.ops.quantized.linear_prepack(table, None)
        self.values = table.int_repr()
        self.token_scale = table.q_per_channel_scales().float()

    def forward(self, tokens: Tensor) -> Tensor:
        return self.values[tokens].float() * self.token_scale[tokens, None]

    def project(self, hidden: Tensor) -> Tensor:
        return int8_product(hidden, self.packed)


def quantize_linears(net: Whisper) -> Whisper:
    """Replace every linear layer of `net` (encoder and decoder, on the CPU) with an `Int8Linear` and the
    token table with an `Int8TokenEmbedding`, in place. The caller turns what is left to float32."""
    levels = weight_levels()
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Linear):
                setattr(module, name, Int8Linear(child, levels))
    net.decoder.token_embedding = Int8TokenEmbedding(net.decoder.token_embedding, levels)
    return net
