"""The Whisper network: an audio encoder and a text decoder. It knows nothing of decoding strategies."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# Up to this many rows, a weight at least as tall as wide is read faster as the left operand of MKL's GEMM.
_WEIGHT_LEFT_MAX_ROWS = 8
# Up to this many queries per window, cross-attention is two plain products against pre-transposed keys.
_FEW_QUERIES = 16


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear`, tuned for the CPU in float32, where the decoder and the vocabulary projection are
    bound by how fast the weights are read. Up to 8 rows against a weight at least as tall as it is wide
    go through MKL with the weight as the left operand, with at least two columns since one column takes
    MKL's slower matrix-vector path (vocabulary projection of one row: 3.4 ms against oneDNN's 4.4, on
    2 EPYC cores); the rest through oneDNN, which beats MKL's few-row GEMM and the encoder's 1500 rows.
    Everything computes in float32; results agree to rounding."""
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


class Linear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class TokenEmbedding(nn.Embedding):
    """The token table, tied to the output layer: `project` scores hidden states against every token."""

    def project(self, hidden: Tensor) -> Tensor:
        return linear(hidden, self.weight)


@dataclass(frozen=True)
class ModelDimensions:
    """Sizes read off a checkpoint; nothing is assumed per model size."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


class SelfAttention(nn.Module):
    """Multi-head self-attention with query, key and value fused in one projection (one matmul)."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = Linear(n_state, 3 * n_state)
        self.out = Linear(n_state, n_state)

    def forward(self, x: Tensor, cache: LayerCache | None = None, mask: Tensor | None = None) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.append(k, v)
        if cache is not None and cache.prompt is not None:
            y = cache.prompt.attend(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class CrossAttention(nn.Module):
    """Decoder-to-audio attention; keys and values are computed once per window (see `project_audio`)."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = Linear(n_state, n_state)
        self.kv = Linear(n_state, 2 * n_state)
        self.out = Linear(n_state, n_state)

    def project_audio(self, xa: Tensor) -> tuple[Tensor, Tensor]:
        """The keys, transposed [batch, head, head_dim, frame], and the values [batch, head, frame,
        head_dim], each laid out contiguously: every decoding step streams them whole, and reading them
        as strided views of the projection was 1.7 ms a step slower (greedy, base, 2 EPYC cores)."""
        b, s, d = xa.shape
        k, v = self.kv(xa).view(b, s, 2, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        return k.transpose(-1, -2).contiguous(), v.contiguous()

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], scores: list[Tensor] | None = None) -> Tensor:
        """`x` holds `group` rows per audio window, consecutive; they are folded into the query length so
        that the beams or samples of one window share that window's keys and values without copies.
        For a few queries, attention is two plain products around a softmax: with the keys pre-transposed
        this beats the fused kernel (0.3 ms a step for one row, 0.6-1.5 ms for five).
        When `scores` is a list, the attention logits [batch, head, query, frame] are appended to it
        (word timing reads them)."""
        keys_t, values = kv
        b, t, d = x.shape
        n_audio = keys_t.shape[0]
        group = b // n_audio
        q = self.query(x).view(n_audio, group * t, self.n_head, d // self.n_head).transpose(1, 2)
        if scores is None and group * t > _FEW_QUERIES:
            # A prompt: the fused kernel keeps its memory bounded (it needs the keys untransposed).
            y = F.scaled_dot_product_attention(q, keys_t.transpose(-1, -2).contiguous(), values)
        else:
            qk = (q * (d // self.n_head) ** -0.5) @ keys_t
            if scores is not None:
                scores.append(
                    qk.view(n_audio, self.n_head, group, t, -1).transpose(1, 2).reshape(b, self.n_head, t, -1)
                )
            y = qk.softmax(dim=-1) @ values
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Sequential):
    def __init__(self, n_state: int):
        super().__init__(Linear(n_state, 4 * n_state), nn.GELU(), Linear(4 * n_state, n_state))


class EncoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn_ln = nn.LayerNorm(n_state)
        self.attn = SelfAttention(n_state, n_head)
        self.mlp_ln = nn.LayerNorm(n_state)
        self.mlp = MLP(n_state)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class DecoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn_ln = nn.LayerNorm(n_state)
        self.attn = SelfAttention(n_state, n_head)
        self.cross_attn_ln = nn.LayerNorm(n_state)
        self.cross_attn = CrossAttention(n_state, n_head)
        self.mlp_ln = nn.LayerNorm(n_state)
        self.mlp = MLP(n_state)

    def forward(
        self, x: Tensor, cross_kv: tuple[Tensor, Tensor], cache: LayerCache, mask: Tensor | None,
        cross_scores: list[Tensor] | None = None,
    ) -> Tensor:
        x = x + self.attn(self.attn_ln(x), cache, mask)
        x = x + self.cross_attn(self.cross_attn_ln(x), cross_kv, cross_scores)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.empty(n_ctx, n_state))
        self.blocks = nn.ModuleList(EncoderBlock(n_state, n_head) for _ in range(n_layer))
        self.ln_post = nn.LayerNorm(n_state)

    def forward(self, mel: Tensor) -> Tensor:
        """mel: [batch, n_mels, 3000] -> audio features [batch, 1500, n_state]."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class SharedPrompt:
    """One layer's keys and values of a prompt that `group` consecutive rows continue (the beams or
    samples of one window), kept once instead of once per row. Each row attends to it and to its own
    keys/values after it. Five beams behind a 224-token prompt then read the prompt's keys and values once
    a step (5.6 MB over base's six layers) instead of five times: the decoder's step went from 9.4 to
    8.4 ms (2 EPYC cores)."""

    def __init__(self, keys: Tensor, values: Tensor, pad: Tensor, group: int):
        self.keys_t = keys.transpose(-1, -2).contiguous()  # [prompts, head, head_dim, length]
        self.values = values.contiguous()  # [prompts, head, length, head_dim]
        self.group = group
        self.mask = None  # additive, [prompts, 1, 1, length]: blind to each prompt's left padding
        if bool(pad.any()):
            positions = torch.arange(keys.shape[2], device=keys.device)
            mask = torch.zeros(len(pad), 1, 1, keys.shape[2], dtype=keys.dtype, device=keys.device)
            self.mask = mask.masked_fill_((positions[None, :] < pad[:, None])[:, None, None], float("-inf"))

    def attend(self, q: Tensor, own_k: Tensor, own_v: Tensor) -> Tensor:
        """Attention of one new query per row [rows, head, 1, head_dim] over the shared prompt and the
        row's own keys/values: one softmax over both, as if they were one sequence."""
        rows, n_head, t, head_dim = q.shape
        if t != 1:
            raise ValueError("rows that share a prompt take one new token at a time")
        prompts, _, _, length = self.keys_t.shape
        q = q * head_dim**-0.5
        # The group's queries side by side, so that each prompt's keys are read once for all of them.
        prompt_scores = q.view(prompts, self.group, n_head, head_dim).transpose(1, 2) @ self.keys_t
        if self.mask is not None:
            prompt_scores = prompt_scores + self.mask
        prompt_scores = prompt_scores.transpose(1, 2).reshape(rows, n_head, 1, length)
        weights = torch.cat([prompt_scores, q @ own_k.transpose(-1, -2)], dim=-1).softmax(dim=-1)
        to_prompt, to_own = weights.split([length, own_k.shape[2]], dim=-1)
        from_prompt = to_prompt.view(prompts, self.group, n_head, length).transpose(1, 2) @ self.values
        return from_prompt.transpose(1, 2).reshape(rows, n_head, 1, head_dim) + to_own @ own_v


class LayerCache:
    """Preallocated key/value buffers of one decoder layer's self-attention, filled left to right.
    `length` counts every position the rows have seen, a shared prompt's included."""

    def __init__(self, batch: int, n_head: int, head_dim: int, max_len: int, device, dtype):
        shape = (batch, n_head, max_len, head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0
        self.prompt: SharedPrompt | None = None
        self._start = 0  # positions held in `prompt` rather than in k and v

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new positions; returns the keys and values held per row (after a shared prompt)."""
        begin = self.length - self._start
        end = begin + k.shape[2]
        self.k[:, :, begin:end] = k
        self.v[:, :, begin:end] = v
        self.length += k.shape[2]
        return self.k[:, :, :end], self.v[:, :, :end]

    def copy_rows(self, targets: Tensor, sources: Tensor) -> None:
        """Row targets[i] takes the keys and values of row sources[i] (a beam that forks, within its group)."""
        held = self.length - self._start
        self.k[targets, :, :held] = self.k[sources, :, :held]
        self.v[targets, :, :held] = self.v[sources, :, :held]

    def share_prompt(self, times: int, pad: Tensor) -> None:
        """What each row holds becomes a prompt shared by `times` consecutive new rows, each with an
        empty buffer of its own for the rest; `pad` is each prompt's left padding."""
        rows, n_head, max_len, head_dim = self.k.shape
        self.prompt = SharedPrompt(self.k[:, :, : self.length], self.v[:, :, : self.length], pad, times)
        self._start = self.length
        shape = (rows * times, n_head, max_len - self.length, head_dim)
        self.k = torch.empty(shape, device=self.k.device, dtype=self.k.dtype)
        self.v = torch.empty(shape, device=self.v.device, dtype=self.v.dtype)


class DecoderState:
    """Everything the decoder keeps between steps for one batch: self-attention caches, the audio's
    cross-attention keys/values, and where each row's text starts (rows are left-padded)."""

    def __init__(self, caches: list[LayerCache], cross_kv: list[tuple[Tensor, Tensor]], pad: Tensor):
        self.caches = caches
        self.cross_kv = cross_kv
        self.pad = pad  # [batch] number of left-padding positions per row
        self.padded = bool(pad.any())

    @property
    def length(self) -> int:
        return self.caches[0].length

    @property
    def shares_prompt(self) -> bool:
        """Rows continue shared prompts, whose padding each layer's SharedPrompt masks."""
        return self.caches[0].prompt is not None

    def copy_rows(self, targets: Tensor, sources: Tensor) -> None:
        """Rows of one window trade histories (beam search); their padding is the same, so it stays."""
        for cache in self.caches:
            cache.copy_rows(targets, sources)

    def share_prompt(self, times: int) -> None:
        """Each row becomes `times` consecutive rows that continue it: the beams or samples of a window
        share its prompt, which was run once and is kept once."""
        for cache in self.caches:
            cache.share_prompt(times, self.pad)
        self.pad = self.pad.repeat_interleave(times)


class TextDecoder(nn.Module):
    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.n_head = n_head
        # On the meta device (a checkpoint load) the random init is skipped: its meta kernel imports sympy,
        # 70 MB of memory for nothing. Elsewhere (random networks for tests and benchmarks) it runs.
        self.token_embedding = TokenEmbedding(n_vocab, n_state, _weight=torch.empty(n_vocab, n_state))
        if not self.token_embedding.weight.is_meta:
            nn.init.normal_(self.token_embedding.weight)
        self.positional_embedding = nn.Parameter(torch.empty(n_ctx, n_state))
        self.blocks = nn.ModuleList(DecoderBlock(n_state, n_head) for _ in range(n_layer))
        self.ln = nn.LayerNorm(n_state)

    def start(self, audio_features: Tensor, batch: int, pad: Tensor, max_len: int) -> DecoderState:
        """Project the audio once for every layer and allocate the caches for `batch` rows."""
        n_state = audio_features.shape[-1]
        cross_kv = [block.cross_attn.project_audio(audio_features) for block in self.blocks]
        caches = [
            LayerCache(batch, self.n_head, n_state // self.n_head, max_len, audio_features.device,
                       audio_features.dtype)
            for _ in self.blocks
        ]
        return DecoderState(caches, cross_kv, pad)

    def forward(self, tokens: Tensor, state: DecoderState, cross_scores: list[Tensor] | None = None) -> Tensor:
        """tokens: [batch, new] appended after what `state` holds -> hidden states [batch, new, n_state];
        `logits` turns the positions a caller needs into scores (one position per step, not all)."""
        b, t = tokens.shape
        offset = state.length
        steps = torch.arange(offset, offset + t, device=tokens.device)
        # Rows that already stopped (a full context) may run past the table; their outputs are unused.
        positions = (steps[None, :] - state.pad[:, None]).clamp(0, self.positional_embedding.shape[0] - 1)
        x = self.token_embedding(tokens) + self.positional_embedding[positions]
        # One new token per row sees every cached key unless some row is left-padded.
        unmasked = t == 1 and (state.shares_prompt or not state.padded)
        mask = None if unmasked else self._mask(state.pad, offset, t, x.dtype)
        for block, cache, cross_kv in zip(self.blocks, state.caches, state.cross_kv, strict=True):
            x = block(x, cross_kv, cache, mask, cross_scores)
        return self.ln(x)

    def logits(self, hidden: Tensor) -> Tensor:
        """Scores over the vocabulary from the tied token embedding."""
        return self.token_embedding.project(hidden)

    @staticmethod
    def _mask(pad: Tensor, offset: int, t: int, dtype: torch.dtype) -> Tensor:
        """Additive mask [batch, 1, t, offset + t]: causal, and blind to each row's left padding.
        A padding position still sees itself, so that no row is all -inf (that would spread NaN)."""
        keys = torch.arange(offset + t, device=pad.device)
        queries = torch.arange(offset, offset + t, device=pad.device)
        causal = keys[None, :] <= queries[:, None]
        allowed = (causal[None] & (keys[None, None, :] >= pad[:, None, None])) | (keys == queries[:, None])[None]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=pad.device)
        return mask.masked_fill_(~allowed, float("-inf"))[:, None]


class Whisper(nn.Module):
    def __init__(self, dims: ModelDimensions):
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(
            dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer
        )
        self.decoder = TextDecoder(
            dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer
        )

    @property
    def device(self) -> torch.device:
        return self.decoder.positional_embedding.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.positional_embedding.dtype

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        return self.dims.n_vocab - 51765 - int(self.is_multilingual)
