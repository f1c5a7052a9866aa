"""No invented text: the rules that keep Whisper from writing words nobody said (a short scrap of noise
it doubts, or improbable words surrounded by silence). Pure functions of a window's decode and word
times; the long-form loop asks them and moves on where they say."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .audio import FRAMES_PER_SECOND, N_FRAMES
from .decoding import DecodingResult
from .timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS

# With voice activity detection: a window of less speech than this, that the model doubts (no-speech
# probability and mean log-probability past these), is not transcribed.
SHORT_SCRAP_S = 2.0
UNSURE_NO_SPEECH = 0.3
UNSURE_LOGPROB = -1.0
PUNCTUATION = PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS
EDGE_S = 2.0  # text this close to a window's edge may continue beyond it: counted as next to silence


@dataclass(frozen=True)
class Window:
    """Where a decode looked: frames [seek, seek + size) of the log-mel, in a 30-s window."""

    seek: int
    size: int

    @property
    def start(self) -> float:
        return self.seek / FRAMES_PER_SECOND

    @property
    def duration(self) -> float:
        """Seconds of audio in the window (less than 30 at the end of the input)."""
        return self.size / FRAMES_PER_SECOND

    @property
    def speech_end(self) -> float:
        return self.start + self.duration

    @property
    def end(self) -> float:
        return (self.seek + N_FRAMES) / FRAMES_PER_SECOND


class Kept(NamedTuple):
    """What survives a window's check: its segments (None: skip the whole window) and where the next
    window starts."""

    segments: list[dict] | None
    next_seek: int


def unsure_scrap(result: DecodingResult, window: Window) -> bool:
    """With the detector on, a window holding only a short scrap of "speech" (a laugh, a cough) that the
    model both doubts is speech and is unsure of: what it would write is invented."""
    return (
        window.duration < SHORT_SCRAP_S
        and result.no_speech_prob > UNSURE_NO_SPEECH
        and result.avg_logprob < UNSURE_LOGPROB
    )


def last_word_end(segments: list[dict]) -> float | None:
    ends = [w["end"] for s in segments for w in s.get("words", [])]
    return ends[-1] if ends else None


def word_anomaly(word: dict) -> float:
    """How unlike spoken words this word is: improbable, implausibly short or long."""
    duration = word["end"] - word["start"]
    score = 1.0 if word.get("probability", 0.0) < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def looks_invented(segment: dict | None) -> bool:
    """The first words of a segment are mostly anomalous (the reference's hallucination heuristic)."""
    if segment is None or not segment["words"]:
        return False
    words = [w for w in segment["words"] if w["word"] not in PUNCTUATION][:8]
    score = sum(word_anomaly(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def drop_inventions(
    segments: list[dict], window: Window, *, next_seek: int, ends_on_timestamp: bool, threshold: float,
    last_speech_end: float, content_frames: int,
) -> Kept:
    """Drop text that looks invented and has at least `threshold` seconds of silence on both sides, and
    say where to go on: after a long silence at the window's end, right after the speech; past an
    invention, from its start (or to the end when only silence follows)."""
    last_end = last_word_end(segments)
    if not ends_on_timestamp and last_end is not None and last_end > window.start:
        next_seek = (round(last_end * FRAMES_PER_SECOND) if window.end - last_end > threshold
                     else window.seek + window.size)
    first = next((seg for seg in segments if seg["words"]), None)
    if looks_invented(first) and first["start"] - window.start > threshold:
        return Kept(None, window.seek + round((first["start"] - window.start) * FRAMES_PER_SECOND))
    previous_end = last_speech_end
    for i, segment in enumerate(segments):
        if not segment["words"]:
            continue
        if looks_invented(segment):
            following = next((seg for seg in segments[i + 1 :] if seg["words"]), None)
            next_start = following["words"][0]["start"] if following else window.speech_end
            silence_before = (
                segment["start"] - previous_end > threshold
                or segment["start"] < threshold
                or segment["start"] - window.start < EDGE_S
            )
            silence_after = (
                next_start - segment["end"] > threshold
                or looks_invented(following)
                or window.end - segment["end"] < EDGE_S
            )
            if silence_before and silence_after:
                if content_frames / FRAMES_PER_SECOND - segment["end"] < threshold:
                    return Kept(segments[:i], content_frames)
                return Kept(segments[:i], round(max(window.start + 1, segment["start"]) * FRAMES_PER_SECOND))
        previous_end = segment["end"]
    return Kept(segments, next_seek)
