"""Word and character error rates, scored the way the Whisper paper scores them: its text normalizers
(the `whisper-normalizer` package), then jiwer's alignment."""

from __future__ import annotations

from collections.abc import Callable

import jiwer
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

# Languages written without spaces between words: scored per character, as the paper scores them.
CHARACTER_SCORED = {"ja", "zh", "yue", "th", "lo", "my"}

_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "EnglishTextNormalizer": EnglishTextNormalizer(),
    "BasicTextNormalizer": BasicTextNormalizer(),
    "BasicTextNormalizer(split_letters=True)": BasicTextNormalizer(split_letters=True),
}


def normalizer_name(language: str | None) -> str:
    """Which of Whisper's normalizers scores `language`: the English one (spellings, numbers, titles and
    contractions folded) for English; the basic one elsewhere and when the language is not known, split into
    letters where words have no spaces, so that a word error rate over them is the character error rate."""
    if language == "en":
        return "EnglishTextNormalizer"
    if language in CHARACTER_SCORED:
        return "BasicTextNormalizer(split_letters=True)"
    return "BasicTextNormalizer"


def normalize_text(text: str, language: str | None = None) -> str:
    """The text as the scoring compares it: only the words (or letters) are left."""
    return _NORMALIZERS[normalizer_name(language)](text).strip()


def error_counts(reference: str, hypothesis: str, language: str | None = None) -> tuple[int, int]:
    """(edits, reference units): words, or characters for languages written without spaces. Summed
    over files they give a pooled rate, which a 5-word clip cannot swing the way it swings a mean."""
    counts = jiwer.process_words(normalize_text(reference, language), normalize_text(hypothesis, language))
    edits = counts.substitutions + counts.deletions + counts.insertions
    return edits, counts.substitutions + counts.deletions + counts.hits


def rate(edits: int, units: int) -> float:
    """Edits per reference unit; with an empty reference, 0 for an empty hypothesis and 1 otherwise."""
    if not units:
        return 0.0 if not edits else 1.0
    return edits / units


def error_rate(reference: str, hypothesis: str, language: str | None = None) -> float:
    """WER, or CER for languages written without spaces; 0 when both are empty."""
    return rate(*error_counts(reference, hypothesis, language))
