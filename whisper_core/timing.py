"""Word-level timestamps: the cross-attention of the model's alignment heads, normalised and smoothed,
aligned to the text tokens by dynamic time warping; then the reference's fixes for long words."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .audio import HOP_LENGTH, SAMPLE_RATE, TOKENS_PER_SECOND
from .model import Whisper
from .tokenizer import Tokenizer

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"
MEDIAN_FILTER_WIDTH = 7


@dataclass
class WordTiming:
    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def median_filter(x: Tensor, width: int) -> Tensor:
    """Median over a sliding window along the last axis, edges reflected (smooths attention spikes)."""
    half = width // 2
    if x.shape[-1] <= half:
        return x
    padded = F.pad(x, (half, half), mode="reflect")
    return padded.unfold(-1, width, 1).sort(dim=-1).values[..., half]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through `cost` [tokens, frames]; returns (token, frame) indices.

    Cells on one anti-diagonal depend only on the two before it, so each diagonal is computed at once.
    Ties go diagonal, then down, then right, as in the reference."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf, dtype=np.float32)  # float32 sums, as the reference keeps
    total[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    for k in range(2, n + m + 1):
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        c0 = total[i - 1, j - 1]
        c1 = total[i - 1, j]
        c2 = total[i, j - 1]
        choice = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        best = np.choose(choice, [c0, c1, c2])
        total[i, j] = cost[i - 1, j - 1] + best
        trace[i, j] = choice
    trace[0, :] = 2
    trace[:, 0] = 1
    path = []
    i, j = n, m
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    path_arr = np.array(path[::-1]).T
    return path_arr[0], path_arr[1]


@torch.inference_mode()
def find_alignment(
    net: Whisper,
    tokenizer: Tokenizer,
    text_tokens: list[int],
    audio_features: Tensor,
    num_frames: int,
    alignment_heads: list[tuple[int, int]],
    cross_kv: list[tuple[Tensor, Tensor]] | None = None,
) -> list[WordTiming]:
    """Time every word of `text_tokens` within one window ([1, n_ctx, d] features; `cross_kv`: their
    projection for the decoder, when the window's decode made it)."""
    if not text_tokens:
        return []
    prefix = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    tokens = torch.tensor([[*prefix, *text_tokens, tokenizer.eot]], device=audio_features.device)
    state = net.decoder.start(audio_features, 1, torch.zeros(1, dtype=torch.long, device=tokens.device),
                              tokens.shape[1], cross_kv)
    scores: list[Tensor] = []
    hidden = net.decoder(tokens, state, cross_scores=scores)
    logits = net.decoder.logits(hidden[0, len(tokenizer.sot_sequence) :]).float()
    probs = logits[:, : tokenizer.eot].softmax(dim=-1)
    token_probs = probs[torch.arange(len(text_tokens)), torch.tensor(text_tokens)].tolist()

    weights = torch.stack([scores[layer][0, head] for layer, head in alignment_heads]).float()
    weights = weights[:, :, : num_frames // 2].softmax(dim=-1)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = median_filter((weights - mean) / std, MEDIAN_FILTER_WIDTH)
    matrix = weights.mean(dim=0)[len(tokenizer.sot_sequence) : -1]
    text_indices, time_indices = dtw(-matrix.double().cpu().numpy())

    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    starts = jump_times[boundaries[:-1]]
    ends = jump_times[boundaries[1:]]
    return [
        WordTiming(word, toks, float(start), float(end), float(np.mean(token_probs[i:j])))
        for word, toks, start, end, i, j in zip(
            words, word_tokens, starts, ends, boundaries[:-1], boundaries[1:], strict=False
        )
    ]


def merge_punctuations(alignment: list[WordTiming], prepended: str, appended: str) -> None:
    """Opening marks join the word after them, closing marks the word before, so no word is a comma."""
    following = len(alignment) - 1
    for i in range(len(alignment) - 2, -1, -1):
        previous = alignment[i]
        if previous.word.startswith(" ") and previous.word.strip() in prepended:
            alignment[following].word = previous.word + alignment[following].word
            alignment[following].tokens = previous.tokens + alignment[following].tokens
            previous.word, previous.tokens = "", []
        else:
            following = i
    kept = 0
    for j in range(1, len(alignment)):
        previous, current = alignment[kept], alignment[j]
        if not previous.word.endswith(" ") and current.word in appended:
            previous.word += current.word
            previous.tokens = previous.tokens + current.tokens
            current.word, current.tokens = "", []
        else:
            kept = j


def add_word_timestamps(
    *,
    segments: list[dict],
    net: Whisper,
    tokenizer: Tokenizer,
    audio_features: Tensor,
    num_frames: int,
    alignment_heads: list[tuple[int, int]],
    last_speech_timestamp: float,
    cross_kv: list[tuple[Tensor, Tensor]] | None = None,
    prepend_punctuations: str = PREPEND_PUNCTUATIONS,
    append_punctuations: str = APPEND_PUNCTUATIONS,
) -> None:
    """Give each segment of one window its `words`, and move segment edges to the words' times."""
    if not segments:
        return
    per_segment = [[t for t in s["tokens"] if t < tokenizer.eot] for s in segments]
    alignment = find_alignment(net, tokenizer, list(itertools.chain.from_iterable(per_segment)), audio_features,
                               num_frames, alignment_heads, cross_kv)
    durations = np.array([t.end - t.start for t in alignment])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if len(durations):  # a word at a sentence boundary is at most twice the median long
        for i in range(1, len(alignment)):
            if alignment[i].end - alignment[i].start > longest:
                if alignment[i].word in SENTENCE_END_MARKS:
                    alignment[i].end = alignment[i].start + longest
                elif alignment[i - 1].word in SENTENCE_END_MARKS:
                    alignment[i].start = alignment[i].end - longest
    merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    offset = segments[0]["seek"] * HOP_LENGTH / SAMPLE_RATE
    index = 0
    for segment, tokens in zip(segments, per_segment, strict=True):
        taken = 0
        words = []
        while index < len(alignment) and taken < len(tokens):
            timing = alignment[index]
            if timing.word:
                words.append({"word": timing.word, "start": round(offset + timing.start, 2),
                              "end": round(offset + timing.end, 2), "probability": timing.probability})
            taken += len(timing.tokens)
            index += 1
        if words:
            last_speech_timestamp = _fix_edges(segment, words, median, longest, last_speech_timestamp)
        segment["words"] = words


def _fix_edges(segment: dict, words: list[dict], median: float, longest: float, last_speech: float) -> float:
    """The first words after a pause are not allowed to stretch back into it; segment and word edges
    agree unless a word is implausibly long. Returns the new end of speech."""
    first = words[0]
    if first["end"] - last_speech > median * 4 and (
        first["end"] - first["start"] > longest
        or (len(words) > 1 and words[1]["end"] - first["start"] > longest * 2)
    ):
        if len(words) > 1 and words[1]["end"] - words[1]["start"] > longest:
            boundary = max(words[1]["end"] / 2, words[1]["end"] - longest)
            first["end"] = words[1]["start"] = boundary
        first["start"] = max(0, first["end"] - longest)
    if segment["start"] < first["end"] and segment["start"] - 0.5 > first["start"]:
        first["start"] = max(0, min(first["end"] - median, segment["start"]))
    else:
        segment["start"] = first["start"]
    last = words[-1]
    if segment["end"] > last["start"] and segment["end"] + 0.5 < last["end"]:
        last["end"] = max(last["start"] + median, segment["end"])
    else:
        segment["end"] = last["end"]
    return segment["end"]
