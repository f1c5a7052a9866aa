"""Whisper's logit rules and the candidate ranking, on small synthetic logits."""

import pytest
import torch

from whisper_core.decoding import (
    DecodingOptions,
    _BeamGroup,
    _CacheRows,
    _LogitRules,
    _rank,
    _rule_spans,
    _shared_windows,
    check_options,
    compression_ratio,
    initial_tokens,
    suppressed_tokens,
)
from whisper_core.kv_cache import DecoderState, LayerCache
from whisper_core.loading import bundled_base
from whisper_core.tokenizer import build_tokenizer

VOCAB = 51865


@pytest.fixture(scope="module")
def tok():
    model_dir, _ = bundled_base()
    return build_tokenizer(model_dir / "tokenizer.json").with_task("en", "transcribe")


def _apply(tok, sampled: list[int], begin: int = 3, **opts) -> torch.Tensor:
    rules = _LogitRules(DecodingOptions(language="en", **opts), tok, begin, "cpu")
    tokens = torch.tensor([[*tok.sot_sequence, *sampled]])
    logits = torch.zeros(1, VOCAB)
    logits[0, tok.timestamp_begin :] = -20.0  # text likelier, so the forced-timestamp rule stays out
    rules.apply(logits, tokens)
    return logits[0]


def test_first_token_is_a_timestamp_within_one_second(tok):
    logits = _apply(tok, [])
    ts = tok.timestamp_begin
    assert torch.isinf(logits[:ts]).all()
    assert torch.isfinite(logits[ts : ts + 51]).all()
    assert torch.isinf(logits[ts + 51 :]).all()


def test_timestamps_come_in_pairs(tok):
    ts = tok.timestamp_begin
    after_pair = _apply(tok, [ts, 400, ts + 10, ts + 10])
    assert torch.isinf(after_pair[ts:]).all()  # text must follow a pair
    after_text_and_stamp = _apply(tok, [ts, 400, ts + 10])
    assert torch.isinf(after_text_and_stamp[: tok.eot]).all()  # another stamp or the end
    assert torch.isfinite(after_text_and_stamp[tok.eot])


def test_timestamps_never_go_back(tok):
    ts = tok.timestamp_begin
    logits = _apply(tok, [ts, 400, 401])
    assert torch.isinf(logits[ts : ts + 1]).all()  # a segment cannot end where it started
    assert torch.isfinite(logits[ts + 1 : ts + 5]).all()


def test_timestamp_forced_when_likelier_than_any_text(tok):
    rules = _LogitRules(DecodingOptions(language="en"), tok, 3, "cpu")
    tokens = torch.tensor([[*tok.sot_sequence, tok.timestamp_begin, 400]])
    logits = torch.full((1, VOCAB), -10.0)
    logits[0, 401] = 0.0
    logits[0, tok.timestamp_begin + 5 : tok.timestamp_begin + 100] = -1.0  # spread, but more in sum
    rules.apply(logits, tokens)
    assert torch.isinf(logits[0, : tok.timestamp_begin]).all()


def test_suppression(tok):
    logits = _apply(tok, [tok.timestamp_begin, 400], without_timestamps=False)
    for t in suppressed_tokens(DecodingOptions(), tok):
        assert torch.isinf(logits[t])
    blank = _apply(tok, [], without_timestamps=True)
    assert torch.isinf(blank[tok.encode(" ")[0]]) and torch.isinf(blank[tok.eot])


def test_initial_tokens_with_prompt_and_prefix(tok):
    tokens = initial_tokens(DecodingOptions(language="en", prompt="hello there", prefix="So"), tok, 448)
    assert tokens[0] == tok.sot_prev
    assert tokens[tokens.index(tok.sot) :][:3] == list(tok.sot_sequence)
    long_prompt = list(range(1000))
    assert len(initial_tokens(DecodingOptions(prompt=long_prompt), tok, 448)) == 1 + 223 + 3


def test_text_so_far_is_read_as_written_after_the_prompt(tok):
    ts = tok.timestamp_begin
    so_far = (ts, 400, 401, ts + 50, ts + 50, 402)
    tokens = initial_tokens(DecodingOptions(language="en", prompt=list(range(1000)), text_so_far=so_far), tok, 448)
    assert tuple(tokens[-len(so_far):]) == so_far and tokens[-len(so_far) - 3 : -len(so_far)] == list(tok.sot_sequence)
    assert len(tokens) == 448 // 2  # the prompt gives way: prompt and text so far within half the context
    assert len(initial_tokens(DecodingOptions(prompt=list(range(1000))), tok, 448)) == 1 + 223 + 3  # as before


def test_the_timestamp_rules_read_the_text_so_far(tok):
    ts = tok.timestamp_begin
    so_far = (ts + 100, 400, 401)  # a segment opened at 2 s, text written: not a window's first token
    rules = _LogitRules(DecodingOptions(language="en", text_so_far=so_far), tok, 3 + len(so_far), "cpu")
    logits = torch.zeros(1, VOCAB)
    logits[0, ts:] = -20.0
    rules.apply(logits, torch.tensor([[*tok.sot_sequence, *so_far]]))
    assert torch.isfinite(logits[0, 402]) and torch.isinf(logits[0, tok.eot])  # something follows it
    assert torch.isinf(logits[0, ts : ts + 101]).all()  # its closing time is after its opening one
    assert torch.isfinite(logits[0, ts + 101 : ts + 1500]).all()  # not held to the first second


def test_option_checks():
    with pytest.raises(ValueError):
        check_options(DecodingOptions(task="summarize"))
    with pytest.raises(ValueError):
        check_options(DecodingOptions(best_of=5))
    with pytest.raises(ValueError):
        check_options(DecodingOptions(patience=2.0))


def test_ranking_and_beams():
    assert _rank([[1, 2, 3], [1]], [-3.0, -2.0], None) == 0  # -1 per token beats -2 per token
    assert _rank([[1, 2, 3], [1]], [-3.0, -2.0], 1.0) == 1
    group = _BeamGroup(beam_size=2, patience=None, eot=0)
    kept, scores, sources = group.step([[5], [5]], [0.0, 0.0], [[-0.1, -0.5, -1.0]] * 2, [[7, 0, 8]] * 2, [0, 1])
    assert kept == [[5, 7], [5, 8]]  # duplicates merge; the ended candidate is set aside
    assert sources == [1, 1]  # identical beams: the later row is the source
    assert list(group.finished) == [(5, 0)]


def test_cache_rows_follow_the_beams():
    """However beams fork and die, each hypothesis's cache row holds its own history, and rows never
    cross from one window to another (cross-attention folds a window's rows together)."""
    generator = torch.Generator().manual_seed(3)
    n_group, n_rows = 3, 6
    cache = LayerCache(n_rows, 1, 1, 20, "cpu", torch.float32)
    state = DecoderState([cache], [], torch.zeros(n_rows, dtype=torch.long))
    rows = _CacheRows(n_rows, n_group, "cpu")
    histories: list[list[float]] = [[] for _ in range(n_rows)]
    copies = 0
    for _ in range(15):
        values = torch.randn(n_rows, generator=generator)
        in_cache_order = rows.to_cache_order(values.view(n_rows, 1, 1, 1))
        cache.append(in_cache_order, in_cache_order)
        histories = [h + [v] for h, v in zip(histories, values.tolist(), strict=True)]
        picks = torch.randint(n_group, (n_rows,), generator=generator).tolist()
        parents = [r // n_group * n_group + pick for r, pick in enumerate(picks)]
        copies += n_rows - len(set(parents))
        rows.follow(parents, state)
        histories = [histories[p] for p in parents]
        for hypothesis, row in enumerate(rows.row_of):
            assert row // n_group == hypothesis // n_group
            assert cache.k[row, 0, : cache.length, 0].tolist() == pytest.approx(histories[hypothesis])
    assert copies > 0


def test_windows_are_shared_only_when_cross_attention_can_fold_them():
    assert _shared_windows([0, 0, 1, 1]) == [0, 1]  # two tasks at each of two windows
    assert _shared_windows([3, 3]) == [3]
    assert _shared_windows([0, 1, 2]) is None  # nothing to share
    assert _shared_windows([0, 0, 1]) is None  # uneven: the fold needs as many rows per window
    assert _shared_windows([0, 1, 0, 1]) is None  # a window's requests apart


def test_compression_ratio_flags_repetition():
    assert compression_ratio("the cat " * 40) > 2.4
    assert compression_ratio("And so my fellow Americans, ask not what your country can do.") < 2.4


def test_requests_with_the_same_rules_are_masked_in_one_pass(tok):
    """The transcript and the translation of two windows: one span, masked as each alone would be; a
    request with other rules gets a span of its own."""
    ts = tok.timestamp_begin
    translate = tok.with_task("en", "translate")
    begin = len(tok.sot_sequence)
    rules = [_LogitRules(DecodingOptions(language="en", task=task), t, begin, "cpu")
             for task, t in [("transcribe", tok), ("translate", translate)] * 2]
    histories = [[ts, 400, ts + 10], [ts, 400, 401], [ts, 400, ts + 10, ts + 10], [ts + 3, 500]]
    tokens = torch.tensor([[*tok.sot_sequence, *h, *[401] * (4 - len(h))][: begin + 4] for h in histories])
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, VOCAB, generator=generator)
    spans = _rule_spans(rules, n_group=1)
    assert [(rows.start, rows.stop) for rows, _ in spans] == [(0, 4)]
    together = logits.clone()
    for rows, rule in spans:
        rule.apply(together[rows], tokens[rows])
    for r, rule in enumerate(rules):
        alone = logits[r : r + 1].clone()
        rule.apply(alone, tokens[r : r + 1])
        assert torch.equal(together[r], alone[0])
    other = _LogitRules(DecodingOptions(language="en", without_timestamps=True), tok, begin, "cpu")
    spans = _rule_spans([rules[0], rules[1], other, rules[2]], n_group=2)
    assert [(rows.start, rows.stop) for rows, _ in spans] == [(0, 4), (4, 6), (6, 8)]


def test_a_request_asking_fewer_tokens_than_its_batch_can_only_end_there(tok):
    """Past its own sample_len a request's rows may write only the end of text; before it, and for a
    request with no limit, the rules are the usual ones."""
    limited = _apply(tok, [400, 401, 402], sample_len=3)
    assert torch.isinf(limited).sum() == VOCAB - 1 and limited[tok.eot] == 0
    assert torch.equal(_apply(tok, [400, 401], sample_len=3), _apply(tok, [400, 401]))
    assert not torch.isinf(_apply(tok, [400, 401, 402])[400])
