"""Decoding one 30-s window: the prompt, greedy / sampling / beam search, the logit rules, and the
ranking of candidates. Many windows, each with its own task and prompt, go through as one batch."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import DecoderState, Whisper
from .tokenizer import Tokenizer

TIMESTAMP_PRECISION = 0.02  # seconds per timestamp token


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
    if options.prompt:
        prompt = _text_tokens(options.prompt, tokenizer)
        tokens = [tokenizer.sot_prev, *prompt[-(n_ctx // 2 - 1):], *tokens]
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
        self.timestamps = not options.without_timestamps
        self.blank = tokenizer.encode(" ") + [tokenizer.eot] if options.suppress_blank else []
        suppress = suppressed_tokens(options, tokenizer)
        if self.timestamps:
            suppress = sorted({*suppress, tokenizer.no_timestamps})
        self.suppress = torch.tensor(suppress, dtype=torch.long, device=device)  # filled by index: 90 of 51865
        self.max_initial = None
        if self.timestamps and options.max_initial_timestamp is not None:
            self.max_initial = round(options.max_initial_timestamp / TIMESTAMP_PRECISION)
        # Requests with equal keys mask their rows in one pass (see `_rule_spans`).
        self.key = (sample_begin, self.timestamps, tuple(self.blank), tuple(suppress), self.max_initial,
                    tokenizer.timestamp_begin, tokenizer.eot)

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        """Mask `logits` [rows, vocab] in place, given the `tokens` [rows, length] so far."""
        first = tokens.shape[1] == self.sample_begin
        if first and self.blank:
            logits[:, self.blank] = -torch.inf
        logits.index_fill_(1, self.suppress, -torch.inf)
        if self.timestamps:
            self._timestamp_rules(logits, tokens, first)

    def _timestamp_rules(self, logits: Tensor, tokens: Tensor, first: bool) -> None:
        ts_begin = self.tokenizer.timestamp_begin
        eot = self.tokenizer.eot
        sampled = tokens[:, self.sample_begin :]
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
    instead of one each (a pass is ~25 small tensor operations: about 0.3 ms for one row, 0.6 ms for
    eight, on 2 EPYC cores, against 1.3 ms for eight passes of one)."""
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
    with several children has its row copied. (Moving every row after each re-ranking cost ~4 ms, on
    297 of the 809 beam-search steps of the 4-minute benchmark file.)"""

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


@torch.inference_mode()
def decode_batch(
    model: Whisper,
    audio_features: Tensor,
    requests: list[tuple[int, DecodingOptions, Tokenizer]],
) -> list[DecodingResult]:
    """Decode windows together. Each request names its row of `audio_features` (rows may be shared,
    e.g. the same window transcribed and translated), its options and its tokenizer (language and task
    set). All requests must share the temperature and the group size; prompts may differ in length
    (rows are left-padded)."""
    if not requests:
        return []
    options0 = requests[0][1]
    n_group = group_size(options0)
    beam = is_beam_search(options0)
    temperature = options0.temperature
    for _, options, _ in requests:
        check_options(options)
        if options.temperature != temperature or group_size(options) != n_group:
            raise ValueError("one batch decodes at one temperature and one group size")
    n_ctx = model.dims.n_text_ctx
    device = model.device
    prompts = [initial_tokens(opts, tok, n_ctx) for _, opts, tok in requests]
    width = max(len(p) for p in prompts)
    pads = [width - len(p) for p in prompts]
    tokenizer0 = requests[0][2]
    sample_len = options0.sample_len or n_ctx // 2
    rule_spans = _rule_spans([_LogitRules(opts, tok, width, device) for _, opts, tok in requests], n_group)
    # The prompt is the same for every beam or sample of a window: it runs once per request, and its
    # keys and values are then shared by the request's n_group rows (consecutive, so that the decoder's
    # attention can fold them).
    prompt_tokens = torch.tensor([[tokenizer0.eot] * pad + p for p, pad in zip(prompts, pads, strict=True)],
                                 dtype=torch.long, device=device)
    indices = [index for index, _, _ in requests]
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
    tokens = prompt_tokens.repeat_interleave(n_group, dim=0)
    pad = state.pad

    n_rows = tokens.shape[0]
    eot = tokenizer0.eot
    sum_logprobs = torch.zeros(n_rows, device=device, dtype=torch.float32)
    ended = torch.zeros(n_rows, dtype=torch.bool, device=device)
    beams = [_BeamGroup(n_group, opts.patience, eot) for _, opts, _ in requests] if beam else []
    active = [True] * len(requests)
    cache_rows = _CacheRows(n_rows, n_group, device)

    for step in range(sample_len):
        if step > 0:
            hidden = model.decoder(cache_rows.to_cache_order(tokens[:, -1:]), state)
            last = cache_rows.from_cache_order(hidden[:, -1])
        logits = model.decoder.logits(last).float()
        for rows, rule in rule_spans:
            rule.apply(logits[rows], tokens[rows])
        if beam:
            tokens = _beam_update(tokens, logits, sum_logprobs, beams, active, n_group, cache_rows, state)
        else:
            tokens = _sample_update(tokens, logits, sum_logprobs, temperature, ended, eot)
            ended |= tokens[:, -1] == eot
        # A row whose own text fills the context stops there, as it would if decoded alone.
        too_long = tokens.shape[1] - pad > n_ctx
        if beam:
            active = [a and not bool(too_long[g * n_group]) for g, a in enumerate(active)]
            if not any(active):
                break
        else:
            ended |= too_long
            if bool(ended.all()):
                break

    results = []
    sampled = tokens[:, width:].tolist()
    totals = sum_logprobs.tolist()
    for g, (_, opts, tok) in enumerate(requests):
        if beam:
            group_rows = [r for r in range(n_rows) if r // n_group == g]
            beams[g].finalize([tokens[r].tolist() for r in group_rows], [totals[r] for r in group_rows])
            candidates = [list(seq[width:]) for seq in beams[g].finished]
            scores = list(beams[g].finished.values())
        else:
            candidates = [sampled[r] for r in range(g * n_group, (g + 1) * n_group)]
            scores = totals[g * n_group : (g + 1) * n_group]
        candidates = [c[: c.index(eot)] if eot in c else c for c in candidates]
        best = _rank(candidates, scores, opts.length_penalty)
        text = tok.decode(candidates[best])
        results.append(
            DecodingResult(
                language=tok.language or "en",
                tokens=candidates[best],
                text=text,
                avg_logprob=scores[best] / (len(candidates[best]) + 1),
                no_speech_prob=no_speech_probs[g],
                temperature=temperature,
                compression_ratio=compression_ratio(text),
            )
        )
    return results


def _sample_update(
    tokens: Tensor, logits: Tensor, sum_logprobs: Tensor, temperature: float, ended: Tensor, eot: int
) -> Tensor:
    """Greedy (temperature 0) or sampled next token for every row; rows that ended get end-of-text
    and no more log-probability."""
    if temperature == 0:
        next_tokens = logits.argmax(dim=-1)
    else:
        next_tokens = torch.distributions.Categorical(logits=logits / temperature).sample()
    logprobs = F.log_softmax(logits, dim=-1)
    current = logprobs[torch.arange(logprobs.shape[0], device=logits.device), next_tokens]
    sum_logprobs += current * ~ended
    next_tokens = next_tokens.masked_fill(ended, eot)
    return torch.cat([tokens, next_tokens[:, None]], dim=-1)


def _beam_update(
    tokens: Tensor,
    logits: Tensor,
    sum_logprobs: Tensor,
    beams: list[_BeamGroup],
    active: list[bool],
    n_group: int,
    cache_rows: _CacheRows,
    state: DecoderState,
) -> Tensor:
    """One beam-search step for every window; the decoder's caches follow the surviving beams."""
    logprobs = F.log_softmax(logits, dim=-1)
    top_logprobs, top_tokens = logprobs.topk(n_group + 1, dim=-1)
    top_logprobs, top_tokens = top_logprobs.tolist(), top_tokens.tolist()
    prefixes = tokens.tolist()
    totals = sum_logprobs.tolist()
    last_tokens: list[int] = []
    sources: list[int] = []
    for g, group in enumerate(beams):
        rows = list(range(g * n_group, (g + 1) * n_group))
        if not active[g]:
            last_tokens += [group.eot] * n_group
            sources += rows
            continue
        kept, kept_scores, kept_sources = group.step(
            [prefixes[r] for r in rows], [totals[r] for r in rows],
            [top_logprobs[r] for r in rows], [top_tokens[r] for r in rows], rows,
        )
        totals[g * n_group : (g + 1) * n_group] = kept_scores
        last_tokens += [sequence[-1] for sequence in kept]
        sources += kept_sources
        if group.done:
            active[g] = False
    sum_logprobs.copy_(torch.tensor(totals, dtype=sum_logprobs.dtype))
    cache_rows.follow(sources, state)
    # Each kept sequence is its source row's tokens and one more: gathered as tensors, not rebuilt from
    # Python lists (0.3 ms a step for five beams of 300 tokens).
    device = tokens.device
    return torch.cat([tokens[torch.tensor(sources, device=device)],
                      torch.tensor(last_tokens, device=device)[:, None]], dim=-1)


def decode(
    model: Whisper, audio_features: Tensor, options: DecodingOptions, tokenizer: Tokenizer
) -> list[DecodingResult]:
    """Decode every row of `audio_features` with the same options."""
    tok = tokenizer.with_task(options.language, options.task)
    return decode_batch(model, audio_features, [(i, options, tok) for i in range(audio_features.shape[0])])

