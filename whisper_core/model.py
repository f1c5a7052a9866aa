"""The Whisper network: an audio encoder and a text decoder. It knows nothing of decoding strategies; its
kernels are chosen in `kernels`, and what the decoder keeps between steps is in `kv_cache`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import attend_transposed, linear
from .kv_cache import DecoderState, LayerCache


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
        head_dim], each laid out contiguously: every decoding step streams them whole, which is slower
        through strided views of the projection."""
        b, s, d = xa.shape
        k, v = self.kv(xa).view(b, s, 2, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        return k.transpose(-1, -2).contiguous(), v.contiguous()

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], scores: list[Tensor] | None = None) -> Tensor:
        """`x` holds `group` rows per audio window, consecutive; they are folded into the query length so
        that the beams or samples of one window share that window's keys and values without copies.
        When `scores` is a list, the attention logits [batch, head, query, frame] are appended to it
        (word timing reads them)."""
        keys_t, values = kv
        b, t, d = x.shape
        n_audio = keys_t.shape[0]
        group = b // n_audio
        q = self.query(x).view(n_audio, group * t, self.n_head, d // self.n_head).transpose(1, 2)
        if scores is None:
            y = attend_transposed(q, keys_t, values)
        else:
            qk = (q * (d // self.n_head) ** -0.5) @ keys_t
            scores.append(qk.view(n_audio, self.n_head, group, t, -1).transpose(1, 2).reshape(b, self.n_head, t, -1))
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

    def project_audio(self, audio_features: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Every layer's cross-attention keys and values of the windows: a window's decode and the word
        timing of each of its texts read one projection, rather than each making its own."""
        return [block.cross_attn.project_audio(audio_features) for block in self.blocks]

    def start(self, audio_features: Tensor, batch: int, pad: Tensor, max_len: int,
              cross_kv: list[tuple[Tensor, Tensor]] | None = None) -> DecoderState:
        """Project the audio once for every layer (unless `cross_kv` is that projection already) and
        allocate the caches for `batch` rows."""
        n_state = audio_features.shape[-1]
        cross_kv = self.project_audio(audio_features) if cross_kv is None else cross_kv
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
