"""Batched long-form: the speech cut at its pauses into chunks of at most 30 s, each decoded on its own
(no previous-text prompt), many at once, and the results put back in time order with the input's times.
Sequential decoding waits for each window's last timestamp before the next; chunks need not wait."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .audio import HOP_LENGTH, N_SAMPLES
from .transcribe import Job, ProgressCallback
from .vad import SpeechMap, find_speech

# Pauses this long may end a chunk; a stretch of speech is split at its last pause before this length
# (the detector pads each stretch on both sides, so the chunk that holds it stays within a window).
CHUNK_MIN_SILENCE_MS = 160
MAX_STRETCH_S = 29.0


def speech_chunks(audio: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) samples of chunks of at most 30 s that begin and end in pauses: consecutive stretches
    of speech joined while they fit in one window, the pauses between them kept."""
    spans = find_speech(audio, min_silence_ms=CHUNK_MIN_SILENCE_MS, max_speech_s=MAX_STRETCH_S).spans
    chunks: list[tuple[int, int]] = []
    for start, end in spans:
        if chunks and end - chunks[-1][0] <= N_SAMPLES:
            chunks[-1] = (chunks[-1][0], end)
        else:
            chunks.extend((s, min(s + N_SAMPLES, end)) for s in range(start, end, N_SAMPLES))
    return chunks


def chunk_map(span: tuple[int, int], total_samples: int) -> SpeechMap:
    """A chunk's times -> the input's: the chunk is one stretch of the original audio."""
    return SpeechMap((span,), total_samples)


class ChunkedRun:
    """The jobs of one input's chunks (for each chunk, one job per task), with progress reported in
    time order: a chunk's rows are handed on once every chunk before it is done, whatever order the
    batches finish them in."""

    def __init__(self, spans: Sequence[tuple[int, int]], progress: ProgressCallback | None):
        self.spans = list(spans)
        self.jobs: list[list[Job]] = [[] for _ in self.spans]
        self.progress = progress
        self._waiting: dict[str, list[list[dict] | None]] = {}  # task -> per chunk: its rows once done
        self._reported: dict[str, int] = {}  # task -> chunks handed on

    def reporter(self, chunk: int) -> ProgressCallback:
        def report(task: str, segments: list[dict], fraction: float) -> None:  # noqa: ARG001
            self._on_window(chunk, task)

        return report

    def _on_window(self, chunk: int, task: str) -> None:
        job = next(j for j in self.jobs[chunk] if j.options.task == task)
        if not job.done:
            return
        waiting = self._waiting.setdefault(task, [None] * len(self.spans))
        waiting[chunk] = job.segments
        reported = self._reported.get(task, 0)
        while reported < len(self.spans) and waiting[reported] is not None:
            if self.progress is not None:
                self.progress(task, waiting[reported], (reported + 1) / len(self.spans))
            reported += 1
        self._reported[task] = reported

    def keep(self, runs: Callable[[Job], bool]) -> None:
        """Drop the jobs the plan does not run (once their language is known)."""
        self.jobs = [[job for job in jobs if runs(job)] for jobs in self.jobs]

    @property
    def all_jobs(self) -> list[Job]:
        return [job for jobs in self.jobs for job in jobs]

    def result(self, task: str) -> dict:
        """The task's result over the whole input, shaped as sequential decoding gives it."""
        segments: list[dict] = []
        first: Job | None = None
        for (start, _), jobs in zip(self.spans, self.jobs, strict=True):
            for job in (j for j in jobs if j.options.task == task):
                first = first or job
                segments += [{**s, "id": len(segments) + n, "seek": s["seek"] + start // HOP_LENGTH}
                             for n, s in enumerate(job.segments)]
        return {
            "text": "".join(segment["text"] for segment in segments),
            "segments": segments,
            "language": first.language if first else None,
            "language_probs": first.language_probs if first else None,
        }
