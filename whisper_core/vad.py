"""Voice activity detection: stretches without speech are cut out before decoding (Silero VAD, whose
model ships inside its wheel), and times in the speech-only audio are mapped back to the original."""

from __future__ import annotations

import bisect
import functools
import itertools
import os
import threading
from dataclasses import dataclass

import numpy as np
import torch

from .audio import SAMPLE_RATE

THRESHOLD = 0.5  # speech probability above which a frame is speech
MIN_SPEECH_MS = 250  # shorter bursts are noise
MIN_SILENCE_MS = 2000  # shorter pauses stay in (they are part of speaking)
SPEECH_PAD_MS = 400  # context kept around each stretch, so that word edges are not cut


@functools.lru_cache(maxsize=1)
def _silero():
    """silero_vad's sequence front-end and its model: the same per-frame probabilities, hence the same
    stretches, as the stock streaming model, from one ONNX Runtime call per 16 s of audio instead of a
    Python loop over every 32-ms frame. Each call keeps its own state; their model runs take turns. Importing
    the package sets torch to one thread for the whole process (a line at its top); the count torch had is
    put back, or every decode after the first voice detection would run on one core."""
    threads = torch.get_num_threads()
    import onnxruntime
    import silero_vad
    from silero_vad.sequence_vad import get_speech_timestamps_sequence

    torch.set_num_threads(threads)
    onnxruntime.set_default_logger_severity(3)  # its notes on initializers silero's file leaves unused
    detector = silero_vad.load_silero_vad(sequence=True)
    detector.session = _OneRunAtATime(detector.session)
    return get_speech_timestamps_sequence, detector


class _OneRunAtATime:
    """An ONNX Runtime session whose calls take turns. Its memory arena keeps what its busiest moment
    needed: eight users' voice detection at once would leave eight calls' worth of memory behind for the
    life of the server. A call covers at most 16 s of audio, so a live speaker's detection waits for
    one such call of an upload's, not for the whole file."""

    def __init__(self, session):
        self._session = session
        self._lock = threading.Lock()
        # A ZeroGPU call runs in a forked child: a lock some other thread held at the fork would never open.
        os.register_at_fork(after_in_child=self._renew_lock)

    def _renew_lock(self) -> None:
        self._lock = threading.Lock()

    def run(self, *args, **kwargs):
        with self._lock:
            return self._session.run(*args, **kwargs)


@dataclass(frozen=True)
class SpeechMap:
    """Where the kept stretches lie: in the speech-only audio and in the original."""

    spans: tuple[tuple[int, int], ...]  # (start, end) samples of speech in the original
    original_samples: int

    @property
    def speech_samples(self) -> int:
        return sum(end - start for start, end in self.spans)

    def to_original(self, seconds: float, stretch: int | None = None) -> float:
        """A time in the speech-only audio -> the same moment in the original audio, held within kept
        stretch `stretch` when one is given (see `stretch_at`)."""
        if not self.spans:
            return 0.0
        stretch = self.stretch_at(seconds) if stretch is None else stretch
        start, end = self.spans[stretch]
        original = min(max(start + seconds * SAMPLE_RATE - self._kept_before[stretch], start), end,
                       self.original_samples)
        return float(original / SAMPLE_RATE)

    def stretch_at(self, seconds: float) -> int:
        """The index of the kept stretch that a time in the speech-only audio falls in. A word belongs to
        the stretch of its middle: the alignment often starts a word a little before the join it follows,
        and that start, mapped on its own, would fall at the end of the stretch before, a pause early."""
        return max(0, bisect.bisect_right(self._kept_before, seconds * SAMPLE_RATE) - 1)

    @functools.cached_property
    def _kept_before(self) -> list[int]:
        """Samples of speech before each stretch: where each begins in the speech-only audio."""
        return list(itertools.accumulate((end - start for start, end in self.spans[:-1]), initial=0))

    def to_speech(self, seconds: float) -> float:
        """A moment of the original audio -> the same moment in the speech-only audio (a moment in a
        dropped pause -> where the next stretch begins there)."""
        sample = seconds * SAMPLE_RATE
        kept = 0
        for start, end in self.spans:
            if sample < end:
                return (kept + max(sample - start, 0)) / SAMPLE_RATE
            kept += end - start
        return kept / SAMPLE_RATE


def find_speech(audio: np.ndarray, *, min_silence_ms: int = MIN_SILENCE_MS,
                max_speech_s: float = float("inf"), pad_ms: int = SPEECH_PAD_MS) -> SpeechMap:
    """The stretches of `audio` (16 kHz mono float32) that hold speech: pauses shorter than
    `min_silence_ms` stay inside a stretch, and a stretch longer than `max_speech_s` is split at its last
    pause before that length (the detector's own rule), or cut there when it has none."""
    speech_timestamps, detector = _silero()
    found = speech_timestamps(
        np.ascontiguousarray(audio, dtype=np.float32),
        detector,
        threshold=THRESHOLD,
        sampling_rate=SAMPLE_RATE,
        min_speech_duration_ms=MIN_SPEECH_MS,
        min_silence_duration_ms=min_silence_ms,
        max_speech_duration_s=max_speech_s,
        speech_pad_ms=pad_ms,
    )
    return SpeechMap(tuple((int(s["start"]), int(s["end"])) for s in found), len(audio))


def keep_speech(audio: np.ndarray, speech: SpeechMap) -> np.ndarray:
    """The speech stretches, joined end to end."""
    if not speech.spans:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([audio[start:end] for start, end in speech.spans]).astype(np.float32, copy=False)
