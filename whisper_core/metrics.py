"""Word and character error rates, for the accuracy table and the parity checks."""

from __future__ import annotations

import re
import unicodedata

# Languages written without spaces between words: scored per character.
CHARACTER_SCORED = {"ja", "zh", "yue", "th", "lo", "my"}


def normalize_text(text: str) -> str:
    """Case, punctuation and spacing folded, so that only the words are compared."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s']|_", " ", text)
    return " ".join(text.split())


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def error_counts(reference: str, hypothesis: str, language: str | None = None) -> tuple[int, int]:
    """(edits, reference units): words, or characters for languages written without spaces. Summed
    over files they give a pooled rate, which a 5-word clip cannot swing the way it swings a mean."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if language in CHARACTER_SCORED:
        ref_units, hyp_units = list(ref.replace(" ", "")), list(hyp.replace(" ", ""))
    else:
        ref_units, hyp_units = ref.split(), hyp.split()
    return _edit_distance(ref_units, hyp_units), len(ref_units)


def rate(edits: int, units: int) -> float:
    """Edits per reference unit; with an empty reference, 0 for an empty hypothesis and 1 otherwise."""
    if not units:
        return 0.0 if not edits else 1.0
    return edits / units


def error_rate(reference: str, hypothesis: str, language: str | None = None) -> float:
    """WER, or CER for languages written without spaces; 0 when both are empty."""
    return rate(*error_counts(reference, hypothesis, language))
