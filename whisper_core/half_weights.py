"""Float16 weights with float32 arithmetic, for the CPU's decoder.

OpenAI's and faster-whisper's checkpoints store their weights in float16. On the CPU the decoder's linear
layers and the token table (which is also the vocabulary projection) keep them so, packed for FBGEMM
(`torch.ops.quantized.linear_dynamic_fp16`), which widens each weight to float32 in registers and
multiplies and sums in float32. A float16 widens to float32 exactly, so this is float32 arithmetic on the
checkpoint's own values: the output is what float32 weights give, to the order of the sums. The decoder
reads every one of its weights for every token, so it is bound by their bytes, and these are half. The
encoder, 1500 rows a window, is bound by arithmetic instead: it stays float32 (oneDNN), which also spares
packing it at every load. A layer whose weights are not exactly float16 (a checkpoint saved from float32
training) stays float32 too."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn

from .model import TokenEmbedding, Whisper

# FBGEMM packs the token table faster a block at a time than whole, and the blocks pack side by side;
# scoring against a few blocks costs no time we can measure.
_TABLE_BLOCK_ROWS = 16384


def available() -> bool:
    """FBGEMM's float16 product exists in x86 builds of torch; elsewhere the layers stay float32."""
    return "fbgemm" in torch.backends.quantized.supported_engines and hasattr(
        torch.ops.quantized, "linear_dynamic_fp16"
    )


def is_exact_float16(weight: Tensor, block: int = 4096) -> bool:
    """Whether float16 holds these values exactly (checked a block of rows at a time, so that the
    106 MB float32 token table needs no full-size temporaries)."""
    if weight.dtype == torch.float16:
        return True
    return all(torch.equal(rows, rows.half().float()) for rows in weight.detach().split(block))


def _pack(weight: Tensor, bias: Tensor | None):
    return torch.ops.quantized.linear_prepack_fp16(
        weight.detach().half(), None if bias is None else bias.detach().float()
    )


class HalfLinear(nn.Module):
    """A linear layer with float16 weights packed for FBGEMM; float32 in, float32 arithmetic, float32 out."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.packed = _pack(linear.weight, linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)


class HalfTokenEmbedding(nn.Module):
    """The tied token table in float16: rows are looked up (and widened) for the input tokens, and the
    packed table scores hidden states for the output."""

    def __init__(self, embedding: TokenEmbedding, mapper: Callable[..., Iterable] = map):
        super().__init__()
        # A plain attribute, not a buffer: `Module.float()` must not widen it.
        self.table = embedding.weight.detach().to(torch.float16)
        self.packed = list(mapper(lambda rows: _pack(rows, None), self.table.split(_TABLE_BLOCK_ROWS)))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.table[tokens].float()

    def project(self, hidden: Tensor) -> Tensor:
        scores = [torch.ops.quantized.linear_dynamic_fp16(hidden, block) for block in self.packed]
        return scores[0] if len(scores) == 1 else torch.cat(scores, dim=-1)


def pack_half_weights(net: Whisper) -> Whisper:
    """Replace, in place, every linear layer of `net`'s decoder (on the CPU) and its token table whose
    weights are exactly float16 with the packed float16 form. The caller turns what is left to float32.
    Packing runs on one core per layer, so layers are packed side by side."""
    places = [(module, name) for module in net.decoder.modules() for name, child in module.named_children()
              if isinstance(child, nn.Linear) and is_exact_float16(child.weight)]
    with ThreadPoolExecutor(max_workers=max(torch.get_num_threads(), 1)) as pool:
        packed = pool.map(lambda place: HalfLinear(getattr(*place)), places)
        for (module, name), layer in zip(places, packed, strict=True):
            setattr(module, name, layer)  # its float16 source can go now
        if is_exact_float16(net.decoder.token_embedding.weight):
            net.decoder.token_embedding = HalfTokenEmbedding(net.decoder.token_embedding, pool.map)
    return net
