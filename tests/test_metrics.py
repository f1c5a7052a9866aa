"""The error rates on strings whose scores are known: Whisper's normalizers fold what the paper folds."""

from __future__ import annotations

import pytest

from whisper_core.accuracy import word_time_agreement
from whisper_core.metrics import error_counts, error_rate, normalize_text, normalizer_name, rate


def test_english_folds_titles_numbers_spellings_and_punctuation():
    reference = "Mr. Smith paid $20 for twenty-five colours, didn't he?"
    hypothesis = "mister smith paid 20 dollars for 25 colors did not he"
    assert normalize_text(reference, "en") == "mister smith paid $20 for 25 colors did not he"
    assert error_counts(reference, hypothesis, "en") == (0, 10)


def test_other_languages_fold_case_and_punctuation_only():
    assert normalize_text("Ça va? Très bien!", "fr") == "ça va très bien"
    assert error_rate("Ça va? Très bien!", "ça va tres bien", "fr") == 0.25  # accents are not folded
    assert error_rate("Mr. Smith", "mister smith", "de") == 0.5  # nor English titles


def test_languages_without_spaces_are_scored_per_character():
    assert normalizer_name("ja") == "BasicTextNormalizer(split_letters=True)"
    assert normalize_text("東京は、今日 晴れ。", "ja") == "東 京 は 今 日 晴 れ"
    assert error_counts("東京は、今日 晴れ。", "東京は今日は晴れ", "ja") == (1, 7)  # one inserted character
    assert error_counts("東京は、今日 晴れ。", "東京は今日は晴れ", "ko") == (3, 3)  # words, for a spaced script


def test_counts_pool_over_files():
    pairs = [("the cat sat", "a cat sat down"), ("hello world", "hello world"), ("red green blue gold", "red gold")]
    counts = [error_counts(ref, hyp, "en") for ref, hyp in pairs]
    assert counts == [(2, 3), (0, 2), (2, 4)]
    edits, units = map(sum, zip(*counts, strict=True))
    assert rate(edits, units) == pytest.approx(4 / 9)  # not the mean of files, 0.39


def test_empty_references():
    assert error_counts("[laughs]", "", "en") == (0, 0)  # bracketed sounds are not words
    assert error_rate("", "", "en") == 0.0
    assert error_rate("", "hello there", "en") == 1.0


def test_word_times_are_compared_on_the_words_both_results_write():
    def result(*words: tuple[str, float, float]) -> dict:
        return {"segments": [{"words": [{"word": w, "start": s, "end": e} for w, s, e in words]}]}

    sequential = result((" Ask", 0.0, 0.4), (" not", 0.4, 0.7), (" what", 0.7, 1.0), (" your", 1.0, 1.2))
    batched = result((" ask", 0.05, 0.45), (" not", 0.4, 0.9), (" your", 1.0, 1.2), (" country", 1.2, 1.8))
    # "what" and "country" are written by one only; "not" ends 0.2 s later; "Ask" and "your" agree.
    assert word_time_agreement(sequential, batched) == (2, 3)
    assert word_time_agreement(sequential, batched, tolerance=0.25) == (3, 3)
