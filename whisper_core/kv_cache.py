"""What the text decoder keeps between steps: each layer's self-attention keys and values, and the prompt
that the beams or samples of one window share, held once."""

from __future__ import annotations

import torch
from torch import Tensor


def keep_blocks(x: Tensor, blocks: list[int], size: int, held: int | None = None) -> Tensor:
    """The leading view of `x` that holds only its blocks of `size` rows listed in `blocks` (ascending),
    each moved down in place: no new memory, so that dropping finished windows from a batch never raises
    its peak. `held`: only the first `held` positions of dim 2 are moved (a cache's filled part)."""
    for new, old in enumerate(blocks):
        if new != old:
            target, source = x[new * size : (new + 1) * size], x[old * size : (old + 1) * size]
            if held is not None:
                target, source = target[:, :, :held], source[:, :, :held]
            target.copy_(source)
    return x[: len(blocks) * size]


class SharedPrompt:
    """One layer's keys and values of a prompt that `group` consecutive rows continue (the beams or
    samples of one window), kept once instead of once per row. Each row attends to it and to its own
    keys/values after it. The beams of a window then read the prompt's keys and values once a step instead
    of once each, and a decoding step is bound by what it reads."""

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

    def keep(self, blocks: list[int], size: int) -> None:
        """Only the prompts in `blocks` of `size` prompts go on."""
        self.keys_t = keep_blocks(self.keys_t, blocks, size)
        self.values = keep_blocks(self.values, blocks, size)
        if self.mask is not None:
            self.mask = keep_blocks(self.mask, blocks, size)


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

    def keep(self, blocks: list[int], rows: int, prompts: int) -> None:
        """Only `blocks` go on, each `rows` consecutive rows continuing `prompts` shared prompts."""
        held = self.length - self._start
        self.k = keep_blocks(self.k, blocks, rows, held)
        self.v = keep_blocks(self.v, blocks, rows, held)
        if self.prompt is not None:
            self.prompt.keep(blocks, prompts)

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

    @property
    def windows(self) -> int:
        """Audio windows whose keys and values the rows attend to (consecutive rows share one)."""
        return self.cross_kv[0][0].shape[0]

    def keep_windows(self, windows: list[int]) -> None:
        """Only the rows of `windows` (ascending) go on: a batch drops the windows it has finished, so that
        its steps no longer read their keys and values. The rows' padding stays as it was, and so does
        whether any row is padded: every kept row is computed as before."""
        rows = len(self.pad) // self.windows
        prompts = self.caches[0].prompt.keys_t.shape[0] // self.windows if self.shares_prompt else 0
        for cache in self.caches:
            cache.keep(windows, rows, prompts)
        self.cross_kv = [(keep_blocks(k, windows, 1), keep_blocks(v, windows, 1)) for k, v in self.cross_kv]
        self.pad = self.pad.view(-1, rows)[windows].flatten()

    def share_prompt(self, times: int) -> None:
        """Each row becomes `times` consecutive rows that continue it: the beams or samples of a window
        share its prompt, which was run once and is kept once."""
        for cache in self.caches:
            cache.share_prompt(times, self.pad)
        self.pad = self.pad.repeat_interleave(times)
