"""The optional int8 mode for the CPU: every linear layer's weights in int8 with a scale per output
channel, activations quantized per row as they arrive, products summed in int32 (`torch._int_mm`,
which uses the CPU's VNNI instructions). It reads a quarter of the bytes the float32 decoder reads per
token and runs the encoder's matrix products faster. The token table, which is also the vocabulary
projection, is stored once in int8. Attention, convolutions and layer norms stay in float32."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .model import Linear, TokenEmbedding, Whisper

INT8_MAX = 127


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per row: values and the float scale [rows, 1] that maps them back. A row of
    zeros gets scale 1 so that nothing divides by zero."""
    scale = x.abs().amax(dim=-1, keepdim=True) / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = torch.round(x / scale).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return values, scale


def quantize_weight(weight: Tensor, block: int = 4096) -> tuple[Tensor, Tensor]:
    """`quantize_rows` a block of rows at a time: done at once, the float temporaries of the 106 MB token
    table would add three times its size to the peak memory."""
    parts = [quantize_rows(rows.float()) for rows in weight.detach().split(block)]
    return torch.cat([values for values, _ in parts]), torch.cat([scale for _, scale in parts])


class Int8Linear(nn.Module):
    """A linear layer whose weights are stored in int8; it computes in int32 and returns float32."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        with torch.no_grad():
            weight, scale = quantize_weight(linear.weight)
        # [out, in], passed transposed: `torch._int_mm` is fastest with its second operand column-major.
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", scale.reshape(1, -1))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        values, scale = quantize_rows(rows)
        y = torch._int_mm(values, self.weight.t()).float().mul_(scale * self.weight_scale)
        if self.bias is not None:
            y += self.bias
        return y.reshape(*shape[:-1], y.shape[-1])


class Int8TokenEmbedding(nn.Module):
    """The tied token table in int8, one scale per token, kept once: rows are looked up for the input
    tokens and the whole table scores hidden states for the output."""

    def __init__(self, embedding: TokenEmbedding):
        super().__init__()
        with torch.no_grad():
            table, scale = quantize_weight(embedding.weight)
        self.register_buffer("table", table)
        self.register_buffer("token_scale", scale.reshape(1, -1))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.table[tokens].float() * self.token_scale[0, tokens, None]

    def project(self, hidden: Tensor) -> Tensor:
        shape = hidden.shape
        values, scale = quantize_rows(hidden.reshape(-1, shape[-1]))
        scores = torch._int_mm(values, self.table.t()).float().mul_(scale * self.token_scale)
        return scores.reshape(*shape[:-1], -1)


def fast_on_this_cpu() -> bool:
    """Whether torch's int8 product (`torch._int_mm`) has a fast kernel here: it needs AVX-512 VNNI (or
    AMX). Elsewhere (AVX2 only) it runs plain loops, and int8 decoding is far slower than the default."""
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_vnni") or capabilities.get("amx_int8"))


def quantize_linears(net: Whisper) -> Whisper:
    """Replace every linear layer of `net` (encoder and decoder, on the CPU) with an `Int8Linear` and the
    token table with an `Int8TokenEmbedding`, in place. The caller turns what is left to float32."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Linear):
                setattr(module, name, Int8Linear(child))
    net.decoder.token_embedding = Int8TokenEmbedding(net.decoder.token_embedding)
    return net
