"""Which kernel computes the network's products. Each choice is made on shapes, for speed alone: every path
gives what the plain PyTorch call gives, to rounding."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# Up to this many rows, a weight at least as tall as wide is read faster as the left operand of MKL's GEMM.
_WEIGHT_LEFT_MAX_ROWS = 8
# Up to this many queries, attention is two plain products against pre-transposed keys.
_FEW_QUERIES = 16
# A CPU encodes this many windows per call: one window's activations stay in its caches, a batch's do not.
_CPU_ENCODER_BATCH = 1


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear`, tuned for the CPU in float32, where the decoder and the vocabulary projection are
    bound by how fast the weights are read. Up to 8 rows against a weight at least as tall as it is wide
    go through MKL with the weight as the left operand, which reads it faster than oneDNN does, with at
    least two columns since one column takes MKL's slower matrix-vector path; the rest through oneDNN,
    which beats MKL's few-row GEMM and the encoder's 1500 rows. Everything computes in float32; results
    agree to rounding."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
        return F.linear(x, weight, bias)
    n_out, n_in = weight.shape
    rows = x.numel() // n_in
    if rows <= _WEIGHT_LEFT_MAX_ROWS and n_out >= n_in:
        flat = x.reshape(rows, n_in)
        columns = (flat.expand(2, n_in).contiguous() if rows == 1 else flat).T
        out = weight @ columns if bias is None else torch.addmm(bias[:, None], weight, columns)
        return out[:, :rows].T.contiguous().view(*x.shape[:-1], n_out)
    if _ONEDNN_LINEAR:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def encode_windows(encoder: Callable[[Tensor], Tensor], mel: Tensor) -> Tensor:
    """The encoder over a batch of windows [batch, n_mels, frames]: at once on an accelerator, one window
    after another on a CPU, where a batch is slower per window than windows taken singly."""
    return torch.cat(list(encoder_passes(encoder, mel)))


def encoder_passes(encoder: Callable[[Tensor], Tensor], mel: Tensor) -> Iterator[Tensor]:
    """`encode_windows` one pass at a time, for a caller that may do other work between passes."""
    if mel.device.type != "cpu" or mel.shape[0] <= _CPU_ENCODER_BATCH:
        yield encoder(mel)
        return
    for i in range(0, mel.shape[0], _CPU_ENCODER_BATCH):
        yield encoder(mel[i : i + _CPU_ENCODER_BATCH])


def attend_transposed(q: Tensor, keys_t: Tensor, values: Tensor) -> Tensor:
    """Attention of `q` [batch, head, query, head_dim] over keys stored transposed [batch, head, head_dim,
    frame]. For a few queries (decoding steps) two plain products around a softmax beat the fused kernel,
    which would need the keys untransposed; for more (a prompt) the fused kernel keeps memory bounded."""
    if q.shape[-2] > _FEW_QUERIES:
        return F.scaled_dot_product_attention(q, keys_t.transpose(-1, -2).contiguous(), values)
    return ((q * q.shape[-1] ** -0.5) @ keys_t).softmax(dim=-1) @ values
