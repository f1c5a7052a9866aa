"""Decoding one 30-s window: the prompt, greedy / sampling / beam search, the logit rules, and the
ranking of candidates. Many windows, each with its own task and prompt, go through as one batch."""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .audio import TIMESTAMP_STEP
from .kv_cache import DecoderState
from .model import Whisper
from .tokenizer import Tokenizer

T = TypeVar("T")
# A request's result as soon as its window is done: (its index, the result, the decoder's keys and values
# of its window for every layer, valid only during the call).
ResultCallback = Callable[[int, "DecodingResult", list[tuple[Tensor, Tensor]]], None]

@dataclass(frozen=True)
class DecodingOptions:
    """How one window is decoded (openai-whisper's names and meanings)."""

    task: str = "transcribe"  # or "translate" (to English)
    language: str | None = None  # None: detect from the window
    temperature: float = 0.0  # 0: the likeliest token; above: sample
    sample_len: int | None = None  # most tokens to sample; default half the text context
    best_of: int | None = None  # independent samples to pick from when temperature > 0
    beam_size: int | None = None  # beams at temperature 0; None or 1: greedy
    patience: float | None = None  # beam search goes on until beam_size * patience candidates end
    length_penalty: float | None = None  # None: rank by log-prob / length; else Google NMT's alpha
    prompt: str | list[int] | None = None  # previous text, for context
    prefix: str | list[int] | None = None  # text the window must start with
    # Tokens the window's text is known to begin with, timestamps included, as the model writes them (a live
    # decode's words already committed): read in one pass rather than decoded again, seen by the timestamp
    # rules as written, and part of the result.
    text_so_far: tuple[int, ...] = ()
    suppress_tokens: str | list[int] | None = "-1"  # "-1": the non-speech symbols
    suppress_blank: bool = True  # no blank or end-of-text as the first token
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0  # the first timestamp is at most this many seconds


@dataclass(frozen=True)
class DecodingResult:
    language: str
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    avg_logprob: float = float("nan")
    no_speech_prob: float = float("nan")
    temperature: float = float("nan")
    compression_ratio: float = float("nan")
    language_probs: dict[str, float] | None = None


@dataclass(frozen=True)
class WindowRequest:
    """One decode of a batch: the row of the batch's audio features it reads (a row may serve several
    requests, e.g. the same window transcribed and translated), its options, and its tokenizer (language
    and task set)."""

    features_row: int
    options: DecodingOptions
    tokenizer: Tokenizer


def compression_ratio(text: str) -> float:
    """How much zlib shrinks the text: repetitive (looping) output shrinks a lot."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def check_options(options: DecodingOptions) -> None:
    """Reject contradictory options early, with a message a user can act on."""
    if options.task not in ("transcribe", "translate"):
        raise ValueError(f"task must be 'transcribe' or 'translate', not {options.task!r}")
    if options.temperature == 0 and options.best_of is not None and options.best_of > 1:
        raise ValueError("best_of needs temperature > 0: at temperature 0 there is nothing to sample")
    if options.patience is not None and (options.beam_size is None or options.beam_size <= 1):
        raise ValueError("patience needs beam_size > 1")
    if options.length_penalty is not None and not 0 <= options.length_penalty <= 1:
        raise ValueError("length_penalty must be between 0 and 1")


def group_size(options: DecodingOptions) -> int:
    """Rows decoded for one window: the beams, or the samples to pick the best of."""
    if options.temperature == 0:
        return max(options.beam_size or 1, 1)
    return max(options.best_of or 1, 1)


def is_beam_search(options: DecodingOptions) -> bool:
    return options.temperature == 0 and (options.beam_size or 1) > 1


def _text_tokens(text_or_tokens: str | list[int], tokenizer: Tokenizer) -> list[int]:
    if isinstance(text_or_tokens, str):
        return tokenizer.encode(" " + text_or_tokens.strip())
    return list(text_or_tokens)


def initial_tokens(options: DecodingOptions, tokenizer: Tokenizer, n_ctx: int) -> list[int]:
    """[<|startofprev|> prompt...] <|startoftranscript|> <|lang|> <|task|> [<|notimestamps|>] [prefix...]"""
    sample_len = options.sample_len or n_ctx // 2
    tokens = list(
        tokenizer.sot_sequence_including_notimestamps if options.without_timestamps else tokenizer.sot_sequence
    )
    if options.prefix:
        prefix = _text_tokens(options.prefix, tokenizer)
        tokens += prefix[-(n_ctx // 2 - sample_len):] if n_ctx // 2 - sample_len > 0 else []
    tokens += options.text_so_far
    if options.prompt:
        prompt = _text_tokens(options.prompt, tokenizer)
        room = n_ctx // 2 - 1
        if options.text_so_far:  # the whole start stays within half the context, as a prompt alone does
            room = max(n_ctx // 2 - 1 - len(tokens), 0)
        tokens = [tokenizer.sot_prev, *(prompt[-room:] if room else []), *tokens]
    return tokens


def suppressed_tokens(options: DecodingOptions, tokenizer: Tokenizer) -> list[int]:
    """Tokens never sampled: the asked-for ones ("-1" = the non-speech symbols) and the control tokens."""
    asked = options.suppress_tokens
    if isinstance(asked, str):
        asked = [int(t) for t in asked.split(",") if t.strip()]
    asked = list(asked or [])
    tokens = [t for t in asked if t >= 0]
    if -1 in asked:
        tokens += tokenizer.non_speech_tokens
    tokens += [tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm,
               tokenizer.no_speech]
    return sorted(set(tokens))


@torch.inference_mode()
def detect_language(
    model: Whisper, audio_features: Tensor, tokenizer: Tokenizer
) -> list[tuple[str, dict[str, float]]]:
    """The likeliest language of each window, and the probability of every language."""
    if not tokenizer.is_multilingual:
        return [("en", {"en": 1.0}) for _ in range(audio_features.shape[0])]
    n = audio_features.shape[0]
    state = model.decoder.start(audio_features, n, torch.zeros(n, dtype=torch.long, device=model.device), 1)
    sot = torch.full((n, 1), tokenizer.sot, device=model.device)
    logits = model.decoder.logits(model.decoder(sot, state)[:, 0]).float()
    lang_tokens = torch.tensor(tokenizer.language_tokens, device=logits.device)
    probs = logits[:, lang_tokens].softmax(dim=-1).cpu()
    out = []
    for row in probs:
        by_code = dict(zip(tokenizer.languages, row.tolist(), strict=True))
        out.append((max(by_code, key=by_code.get), by_code))
    return out


class _LogitRules:
    """What may come next: no blank start, suppressed tokens, and Whisper's timestamp grammar
    (timestamps in pairs, never going back, the first one early, a timestamp when they are likelier
    together than any single text token)."""

    def __init__(self, options: DecodingOptions, tokenizer: Tokenizer, sample_begin: int, device):
        self.tokenizer = tokenizer
        self.sample_begin = sample_begin
        self.text_begin = sample_begin - len(options.text_so_far)  # where the timestamp grammar starts reading
        # A request that asked for fewer tokens than others in its batch ends there: only the end may come.
        self.sample_len = options.sample_len
        self.timestamps = not options.without_timestamps
        self.blank = tokenizer.encode(" ") + [tokenizer.eot] if options.suppress_blank else []
        suppress = suppressed_tokens(options, tokenizer)
        if self.timestamps:
            suppress = sorted({*suppress, tokenizer.no_timestamps})
        self.suppress = torch.tensor(suppress, dtype=torch.long, device=device)  # filled by index: 90 of 51865
        self.max_initial = None
        if self.timestamps and options.max_initial_timestamp is not None:
            self.max_initial = round(options.max_initial_timestamp / TIMESTAMP_STEP)
        # Requests with equal keys mask their rows in one pass (see `_rule_spans`).
        self.key = (sample_begin, self.text_begin, self.timestamps, tuple(self.blank), tuple(suppress),
                    self.max_initial, tokenizer.timestamp_begin, tokenizer.eot, self.sample_len)

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        """Mask `logits` [rows, vocab] in place, given the `tokens` [rows, length] so far."""
        if tokens.shape[1] == self.sample_begin and self.blank:  # the first token decoded, after any text so far
            logits[:, self.blank] = -torch.inf
        logits.index_fill_(1, self.suppress, -torch.inf)
        if self.timestamps:
            self._timestamp_rules(logits, tokens, first=tokens.shape[1] == self.text_begin)
        if self.sample_len is not None and tokens.shape[1] - self.sample_begin >= self.sample_len:
            eot = self.tokenizer.eot
            logits[:, :eot] = -torch.inf
            logits[:, eot + 1 :] = -torch.inf

    def _timestamp_rules(self, logits: Tensor, tokens: Tensor, first: bool) -> None:
        ts_begin = self.tokenizer.timestamp_begin
        eot = self.tokenizer.eot
        sampled = tokens[:, self.text_begin :]
        n = sampled.shape[1]
        if n > 0:
            is_ts = sampled >= ts_begin
            last_ts = is_ts[:, -1]
            penultimate_ts = is_ts[:, -2] if n >= 2 else torch.ones_like(last_ts)
            # After a pair (or a lone opening timestamp) text must come; after text and a timestamp,
            # only another timestamp or the end.
            logits[:, ts_begin:].masked_fill_((last_ts & penultimate_ts)[:, None], -torch.inf)
            logits[:, :eot].masked_fill_((last_ts & ~penultimate_ts)[:, None], -torch.inf)
            # Timestamps never decrease, and a segment has a nonzero length.
            last_value = torch.where(is_ts, sampled - ts_begin, -1).max(dim=1).values
            floor = torch.where(last_ts & ~penultimate_ts, last_value, last_value + 1)
            steps = torch.arange(logits.shape[1] - ts_begin, device=logits.device)
            stamps = logits[:, ts_begin:]
            stamps.masked_fill_((last_value >= 0)[:, None] & (steps[None] < floor[:, None]), -torch.inf)
        if first:
            logits[:, :ts_begin] = -torch.inf
            if self.max_initial is not None:
                logits[:, ts_begin + self.max_initial + 1 :] = -torch.inf
        logprobs = F.log_softmax(logits.float(), dim=-1)
        timestamp_logprob = logprobs[:, ts_begin:].logsumexp(dim=-1)
        text_logprob = logprobs[:, :ts_begin].max(dim=-1).values
        logits[:, :ts_begin].masked_fill_((timestamp_logprob > text_logprob)[:, None], -torch.inf)


def _rule_spans(rules: list[_LogitRules], n_group: int) -> list[tuple[slice, _LogitRules]]:
    """The rows of consecutive requests with the same rules, as one span each: every rule runs over all
    its rows at once, so the two tasks of a window, or the requests of several users, cost one pass
    instead of one each (a pass is some 25 small tensor operations, whose cost barely grows with its
    rows)."""
    spans: list[tuple[int, int, _LogitRules]] = []
    for g, rule in enumerate(rules):
        if spans and spans[-1][2].key == rule.key:
            spans[-1] = (spans[-1][0], (g + 1) * n_group, spans[-1][2])
        else:
            spans.append((g * n_group, (g + 1) * n_group, rule))
    return [(slice(start, end), rule) for start, end, rule in spans]


class _BeamGroup:
    """Beam search for one window: keeps the best unfinished beams and collects finished candidates."""

    def __init__(self, beam_size: int, patience: float | None, eot: int):
        self.beam_size = beam_size
        self.max_candidates = round(beam_size * (patience or 1.0))
        self.eot = eot
        self.finished: dict[tuple[int, ...], float] = {}

    @property
    def done(self) -> bool:
        return len(self.finished) >= self.max_candidates

    def step(self, prefixes: list[list[int]], sum_logprobs: list[float], top_logprobs: list[list[float]],
             top_tokens: list[list[int]], rows: list[int]) -> tuple[list[list[int]], list[float], list[int]]:
        """Extend each beam by its best tokens; return the kept sequences, their scores and source rows."""
        scores: dict[tuple[int, ...], float] = {}
        sources: dict[tuple[int, ...], int] = {}
        for prefix, total, logprobs, tokens, row in zip(
            prefixes, sum_logprobs, top_logprobs, top_tokens, rows, strict=True
        ):
            for logprob, token in zip(logprobs, tokens, strict=True):
                sequence = (*prefix, token)
                scores[sequence] = total + logprob
                sources[sequence] = row
        kept: list[list[int]] = []
        kept_scores: list[float] = []
        kept_sources: list[int] = []
        newly_finished: dict[tuple[int, ...], float] = {}
        for sequence in sorted(scores, key=scores.get, reverse=True):
            if sequence[-1] == self.eot:
                newly_finished[sequence] = scores[sequence]
            else:
                kept.append(list(sequence))
                kept_scores.append(scores[sequence])
                kept_sources.append(sources[sequence])
                if len(kept) == self.beam_size:
                    break
        for sequence in sorted(newly_finished, key=newly_finished.get, reverse=True):
            if len(self.finished) >= self.max_candidates:
                break
            self.finished[sequence] = newly_finished[sequence]
        return kept, kept_scores, kept_sources

    def finalize(self, prefixes: list[list[int]], sum_logprobs: list[float]) -> None:
        """When too few beams ended, the unfinished ones count too, best first."""
        if len(self.finished) < self.beam_size:
            for j in sorted(range(len(prefixes)), key=lambda j: sum_logprobs[j], reverse=True):
                self.finished[(*prefixes[j], self.eot)] = sum_logprobs[j]
                if len(self.finished) >= self.beam_size:
                    break


class _CacheRows:
    """Beam search without moving the decoder's caches: hypothesis r lives in cache row `row_of[r]`.
    When beams are re-ranked, each hypothesis that goes on keeps its parent's row, and only a parent
    with several children has its row copied, instead of every layer's cache being reordered whenever
    the beams are."""

    def __init__(self, n_rows: int, n_group: int, device):
        self.n_group = n_group
        self.device = device
        self.row_of = list(range(n_rows))
        self._index: Tensor | None = None  # row_of as a tensor; None while it is the identity

    def to_cache_order(self, x: Tensor) -> Tensor:
        """Hypothesis-ordered rows -> cache-ordered rows."""
        if self._index is None:
            return x
        out = torch.empty_like(x)
        out[self._index] = x
        return out

    def from_cache_order(self, x: Tensor) -> Tensor:
        return x if self._index is None else x[self._index]

    def keep(self, windows: list[int]) -> None:
        """Only the hypotheses of `windows` go on; the caches move each kept window's rows down as a
        block (`DecoderState.keep_windows`), so a hypothesis keeps its place within its window."""
        n = self.n_group
        self.row_of = [self.row_of[w * n + j] - (w - new) * n for new, w in enumerate(windows) for j in range(n)]
        identity = self.row_of == list(range(len(self.row_of)))
        self._index = None if identity else torch.tensor(self.row_of, device=self.device)

    def follow(self, parents: list[int], state: DecoderState) -> None:
        """Hypothesis r now continues hypothesis parents[r] (of the same window)."""
        if parents == list(range(len(parents))):
            return
        row_of = [-1] * len(parents)
        taken: set[int] = set()
        for child, parent in enumerate(parents):
            if self.row_of[parent] not in taken:
                row_of[child] = self.row_of[parent]
                taken.add(row_of[child])
        targets, sources = [], []
        for child, parent in enumerate(parents):
            if row_of[child] < 0:
                first = child // self.n_group * self.n_group
                row_of[child] = next(row for row in range(first, first + self.n_group) if row not in taken)
                taken.add(row_of[child])
                targets.append(row_of[child])
                sources.append(self.row_of[parent])
        if targets:
            state.copy_rows(torch.tensor(targets, device=self.device), torch.tensor(sources, device=self.device))
        self.row_of = row_of
        identity = row_of == list(range(len(row_of)))
        self._index = None if identity else torch.tensor(row_of, device=self.device)


def _rank(candidates: list[list[int]], sum_logprobs: list[float], length_penalty: float | None) -> int:
    """The best candidate by log-probability over a length penalty."""
    def score(i: int) -> float:
        length = len(candidates[i])
        penalty = length if length_penalty is None else ((5 + length) / 6) ** length_penalty
        return sum_logprobs[i] / penalty

    return max(range(len(candidates)), key=score)


def _shared_windows(indices: list[int]) -> list[int] | None:
    """Each window once, when the requests of a window are consecutive and every window has as many
    (the transcript and the translation of one window): cross-attention then folds them onto one copy
    of the window's keys and values, projected once and read once a step. Else None."""
    windows = list(dict.fromkeys(indices))
    per_window = len(indices) // len(windows)
    if per_window > 1 and indices == [w for w in windows for _ in range(per_window)]:
        return windows
    return None


class TokenDecoder(ABC):
    """How the next token of every row is chosen (openai-whisper's interface): `update` extends the
    rows by one token, `finalize` gives windows' candidates. The rows are each window's `n_group`
    rows in turn, and tokens before `sample_begin` are the prompt. A row whose own text fills the
    context stops there, as it would if decoded alone: `max_length` [rows] is a row's left padding plus
    the text context. `keep` drops finished windows from the rows (see `decode_batch`)."""

    def __init__(self, n_group: int, eot: int, sample_begin: int, max_length: Tensor):
        self.n_group = n_group
        self.eot = eot
        self.sample_begin = sample_begin
        self.max_length = max_length

    def to_cache_order(self, x: Tensor) -> Tensor:
        """Rows as the decoder's caches hold them: only beam search lets that order differ."""
        return x

    def from_cache_order(self, x: Tensor) -> Tensor:
        return x

    @abstractmethod
    def update(self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, bool]:
        """`tokens` [rows, length] with each row's next token appended, chosen from the masked `logits`
        [rows, vocab] (its log-probability is added to `sum_logprobs` [rows] in place); and whether
        every row is done."""

    @abstractmethod
    def ended(self) -> list[bool]:
        """Whether each window in the rows is done."""

    @abstractmethod
    def keep(self, windows: list[int]) -> None:
        """Only the rows of `windows` (positions in the rows, ascending) go on."""

    @abstractmethod
    def finalize(self, tokens: Tensor, sum_logprobs: Tensor,
                 windows: list[int]) -> tuple[list[list[list[int]]], list[list[float]]]:
        """The candidates of `windows` (the tokens after the prompt, perhaps running on past
        end-of-text) and their summed log-probabilities."""


class GreedyDecoder(TokenDecoder):
    """The likeliest token (temperature 0) or a sampled one. A row that ended gets end-of-text and no
    more log-probability, so that the batch can go on until every row has ended."""

    def __init__(self, temperature: float, n_group: int, eot: int, sample_begin: int, max_length: Tensor):
        super().__init__(n_group, eot, sample_begin, max_length)
        self.temperature = temperature
        self.row_ended = torch.zeros(max_length.shape, dtype=torch.bool, device=max_length.device)

    def update(self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, bool]:
        if self.temperature == 0:
            next_tokens = logits.argmax(dim=-1)
        else:
            next_tokens = torch.distributions.Categorical(logits=logits / self.temperature).sample()
        logprobs = F.log_softmax(logits, dim=-1)
        current = logprobs[torch.arange(logprobs.shape[0], device=logits.device), next_tokens]
        sum_logprobs += current * ~self.row_ended
        next_tokens = next_tokens.masked_fill(self.row_ended, self.eot)
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
        self.row_ended |= (next_tokens == self.eot) | (tokens.shape[1] > self.max_length)
        return tokens, bool(self.row_ended.all())

    def ended(self) -> list[bool]:
        return self.row_ended.view(-1, self.n_group).all(dim=1).tolist()

    def keep(self, windows: list[int]) -> None:
        rows = _rows_of(windows, self.n_group, self.row_ended.device)
        self.row_ended = self.row_ended[rows]
        self.max_length = self.max_length[rows]

    def finalize(self, tokens: Tensor, sum_logprobs: Tensor,
                 windows: list[int]) -> tuple[list[list[list[int]]], list[list[float]]]:
        n = self.n_group
        sampled = tokens[:, self.sample_begin :].tolist()
        totals = sum_logprobs.tolist()
        return [sampled[w * n : (w + 1) * n] for w in windows], [totals[w * n : (w + 1) * n] for w in windows]


class BeamSearchDecoder(TokenDecoder):
    """Beam search for every window at once: each window's `_BeamGroup` picks its beams, and the
    decoder's caches follow them through `_CacheRows`. A window stops when it has its candidates or its
    text fills the context; its rows then only get end-of-text."""

    def __init__(self, patiences: list[float | None], n_group: int, eot: int, sample_begin: int,
                 max_length: Tensor, state: DecoderState):
        super().__init__(n_group, eot, sample_begin, max_length)
        self.groups = [_BeamGroup(n_group, patience, eot) for patience in patiences]
        self.active = [True] * len(self.groups)
        # A window's rows share their padding, hence their limit: read once, not at every step.
        self.window_max_length: list[int] = max_length[::n_group].tolist()
        self.cache_rows = _CacheRows(len(self.groups) * n_group, n_group, max_length.device)
        self.state = state

    def to_cache_order(self, x: Tensor) -> Tensor:
        return self.cache_rows.to_cache_order(x)

    def from_cache_order(self, x: Tensor) -> Tensor:
        return self.cache_rows.from_cache_order(x)

    def update(self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor) -> tuple[Tensor, bool]:
        n = self.n_group
        logprobs = F.log_softmax(logits, dim=-1)
        top_logprobs, top_tokens = logprobs.topk(n + 1, dim=-1)
        top_logprobs, top_tokens = top_logprobs.tolist(), top_tokens.tolist()
        prefixes = tokens.tolist()
        totals = sum_logprobs.tolist()
        last_tokens: list[int] = []
        sources: list[int] = []
        for g, group in enumerate(self.groups):
            rows = list(range(g * n, (g + 1) * n))
            if not self.active[g]:
                last_tokens += [self.eot] * n
                sources += rows
                continue
            kept, kept_scores, kept_sources = group.step(
                [prefixes[r] for r in rows], [totals[r] for r in rows],
                [top_logprobs[r] for r in rows], [top_tokens[r] for r in rows], rows,
            )
            totals[g * n : (g + 1) * n] = kept_scores
            last_tokens += [sequence[-1] for sequence in kept]
            sources += kept_sources
            if group.done:
                self.active[g] = False
        sum_logprobs.copy_(torch.tensor(totals, dtype=sum_logprobs.dtype))
        self.cache_rows.follow(sources, self.state)
        # Each kept sequence is its source row's tokens and one more: gathered as tensors, not rebuilt
        # from Python lists, which would cost more the longer the text.
        device = tokens.device
        tokens = torch.cat([tokens[torch.tensor(sources, device=device)],
                            torch.tensor(last_tokens, device=device)[:, None]], dim=-1)
        length = tokens.shape[1]
        self.active = [a and length <= limit for a, limit in zip(self.active, self.window_max_length, strict=True)]
        return tokens, not any(self.active)

    def ended(self) -> list[bool]:
        return [not active for active in self.active]

    def keep(self, windows: list[int]) -> None:
        self.groups = [self.groups[w] for w in windows]
        self.active = [self.active[w] for w in windows]
        self.window_max_length = [self.window_max_length[w] for w in windows]
        self.max_length = self.max_length[_rows_of(windows, self.n_group, self.max_length.device)]
        self.cache_rows.keep(windows)

    def finalize(self, tokens: Tensor, sum_logprobs: Tensor,
                 windows: list[int]) -> tuple[list[list[list[int]]], list[list[float]]]:
        n = self.n_group
        prefixes = tokens.tolist()
        totals = sum_logprobs.tolist()
        groups = [self.groups[w] for w in windows]
        for w, group in zip(windows, groups, strict=True):
            group.finalize(prefixes[w * n : (w + 1) * n], totals[w * n : (w + 1) * n])
        candidates = [[list(sequence[self.sample_begin :]) for sequence in group.finished] for group in groups]
        return candidates, [list(group.finished.values()) for group in groups]


def _rows_of(windows: list[int], n_group: int, device) -> Tensor:
    """The rows of `windows`, each window's `n_group` consecutive rows."""
    return torch.tensor([w * n_group + j for w in windows for j in range(n_group)], dtype=torch.long, device=device)


def _token_decoder(requests: list[WindowRequest], sample_begin: int, max_length: Tensor,
                   state: DecoderState) -> TokenDecoder:
    """Beam search or greedy / sampling, as the batch's options ask (they agree on both)."""
    options = requests[0].options
    n_group = group_size(options)
    eot = requests[0].tokenizer.eot
    if is_beam_search(options):
        patiences = [request.options.patience for request in requests]
        return BeamSearchDecoder(patiences, n_group, eot, sample_begin, max_length, state)
    return GreedyDecoder(options.temperature, n_group, eot, sample_begin, max_length)


def _run_prompts(
    model: Whisper, audio_features: Tensor, requests: list[WindowRequest], n_group: int, sample_len: int
) -> tuple[Tensor, Tensor, DecoderState, list[float]]:
    """Run each request's prompt (left-padded to one width) once; its keys and values are then shared
    by the request's n_group rows, consecutive so that the decoder's attention can fold them. Returns
    the rows' tokens, their last hidden states, the decoder's state and each request's no-speech
    probability (read at its start-of-transcript)."""
    n_ctx = model.dims.n_text_ctx
    device = model.device
    prompts = [initial_tokens(request.options, request.tokenizer, n_ctx) for request in requests]
    width = max(len(p) for p in prompts)
    pads = [width - len(p) for p in prompts]
    tokenizer0 = requests[0].tokenizer
    prompt_tokens = torch.tensor([[tokenizer0.eot] * pad + p for p, pad in zip(prompts, pads, strict=True)],
                                 dtype=torch.long, device=device)
    indices = [request.features_row for request in requests]
    features = audio_features[_shared_windows(indices) or indices]
    state = model.decoder.start(features, len(requests), torch.tensor(pads, device=device), width + sample_len)
    hidden = model.decoder(prompt_tokens, state)
    sot_positions = torch.tensor([pad + p.index(tokenizer0.sot) for p, pad in zip(prompts, pads, strict=True)],
                                 device=device)
    at_sot = model.decoder.logits(hidden[torch.arange(len(requests), device=device), sot_positions])
    no_speech_probs = at_sot.float().softmax(dim=-1)[:, tokenizer0.no_speech].tolist()
    last = hidden[:, -1]
    if n_group > 1:
        state.share_prompt(n_group)
        last = last.repeat_interleave(n_group, dim=0)
    return prompt_tokens.repeat_interleave(n_group, dim=0), last, state, no_speech_probs


def _result(request: WindowRequest, candidates: list[list[int]], scores: list[float], eot: int,
            no_speech_prob: float) -> DecodingResult:
    """The window's best candidate, cut at its end-of-text."""
    candidates = [c[: c.index(eot)] if eot in c else c for c in candidates]
    best = _rank(candidates, scores, request.options.length_penalty)
    tokens = [*request.options.text_so_far, *candidates[best]]
    text = request.tokenizer.decode(tokens)
    return DecodingResult(
        language=request.tokenizer.language or "en",
        tokens=tokens,
        text=text,
        avg_logprob=scores[best] / (len(candidates[best]) + 1),  # of the tokens decoded
        no_speech_prob=no_speech_prob,
        temperature=request.options.temperature,
        compression_ratio=compression_ratio(text),
    )


def decode_batch(model: Whisper, audio_features: Tensor, requests: list[WindowRequest]) -> list[DecodingResult]:
    """Decode windows together, one result per request. All requests must share the temperature and
    the group size; prompts may differ in length (rows are left-padded). A window whose requests are all
    done leaves the batch at once: the others' steps then no longer compute its rows or read its keys and
    values (a batch of chunks ends a few dozen tokens apart)."""
    return run_to_end(decode_steps(model, audio_features, requests))


def run_to_end(steps: Generator[None, None, T]) -> T:
    """What a generator of pauses returns, run without pausing."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


@torch.inference_mode()
def decode_steps(model: Whisper, audio_features: Tensor, requests: list[WindowRequest],
                 on_result: ResultCallback | None = None) -> Generator[None, None, list[DecodingResult]]:
    """`decode_batch`, pausing after each token: its caller may do other work there (the service serves
    a live speaker in the middle of a long batch), and gets the results as the generator's value.
    `on_result` gets each request's result as soon as its window is done, with the decoder's projection
    of that window, which the word timing of its text reads rather than projecting it again."""
    if not requests:
        return []
    options0 = requests[0].options
    n_group = group_size(options0)
    for request in requests:
        check_options(request.options)
        if request.options.temperature != options0.temperature or group_size(request.options) != n_group:
            raise ValueError("one batch decodes at one temperature and one group size")
    n_ctx = model.dims.n_text_ctx
    sample_len = max(r.options.sample_len or n_ctx // 2 for r in requests)
    tokens, last, state, no_speech_probs = _run_prompts(model, audio_features, requests, n_group, sample_len)
    width = tokens.shape[1]
    rules = [_LogitRules(r.options, r.tokenizer, width, model.device) for r in requests]
    rule_spans = _rule_spans(rules, n_group)
    decoder = _token_decoder(requests, width, state.pad + n_ctx, state)
    sum_logprobs = torch.zeros(tokens.shape[0], device=model.device, dtype=torch.float32)
    per_window = len(requests) // state.windows  # requests folded onto one window's keys and values
    live = list(range(len(requests)))  # the requests still in the batch, in row order
    results: list[DecodingResult | None] = [None] * len(requests)

    def finish(positions: list[int]) -> None:
        candidates, scores = decoder.finalize(tokens, sum_logprobs, positions)
        for position, window_candidates, window_scores in zip(positions, candidates, scores, strict=True):
            r = live[position]
            results[r] = _result(requests[r], window_candidates, window_scores, decoder.eot, no_speech_probs[r])
            if on_result is not None:  # before the batch drops the window: its keys and values are still there
                w = position // per_window
                on_result(r, results[r], [(k[w : w + 1], v[w : w + 1]) for k, v in state.cross_kv])

    for step in range(sample_len):
        if step > 0:
            hidden = model.decoder(decoder.to_cache_order(tokens[:, -1:]), state)
            last = decoder.from_cache_order(hidden[:, -1])
        logits = model.decoder.logits(last).float()
        for rows, rule in rule_spans:
            rule.apply(logits[rows], tokens[rows])
        tokens, done = decoder.update(tokens, logits, sum_logprobs)
        if done:
            break
        yield
        ended = decoder.ended()
        windows = range(len(live) // per_window)
        kept = [w for w in windows if not all(ended[w * per_window : (w + 1) * per_window])]
        if len(kept) < len(windows):
            positions = [w * per_window + i for w in kept for i in range(per_window)]
            finish(sorted(set(range(len(live))) - set(positions)))
            rows = _rows_of(positions, n_group, tokens.device)
            tokens, sum_logprobs = tokens[rows], sum_logprobs[rows]
            decoder.keep(positions)
            state.keep_windows(kept)
            live = [live[p] for p in positions]
            rule_spans = _rule_spans([rules[r] for r in live], n_group)

    finish(list(range(len(live))))
    return results


def decode(
    model: Whisper, audio_features: Tensor, options: DecodingOptions, tokenizer: Tokenizer
) -> list[DecodingResult]:
    """Decode every row of `audio_features` with the same options."""
    tok = tokenizer.with_task(options.language, options.task)
    return decode_batch(model, audio_features, [WindowRequest(i, options, tok) for i in range(audio_features.shape[0])])
