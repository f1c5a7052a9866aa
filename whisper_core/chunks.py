"""Batched long-form: the speech cut at its pauses into chunks of at most 30 s, each decoded on its own
(no previous-text prompt), many at once, and the results put back in time order with the input's times.
Sequential decoding waits for each window's last timestamp before the next; chunks need not wait."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import transcribe as longform
from .audio import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE
from .model import Whisper
from .options import TASKS
from .tasks import TaskPlan
from .transcribe import Audio, Job, ProgressCallback
from .vad import SPEECH_PAD_MS, SpeechMap, find_speech

# Pauses this long may end a chunk; a stretch of speech is split at its last pause before this length
# (the detector pads each stretch on both sides, so the chunk that holds it stays within a window).
CHUNK_MIN_SILENCE_MS = 160
MAX_STRETCH_S = 29.0
LOOKBACK = 8 * SAMPLE_RATE  # a full chunk may end this far before its limit, at a longer pause


def speech_chunks(audio: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) samples of chunks of at most 30 s that begin and end in pauses: consecutive stretches
    of speech joined while they fit in one window, the pauses between them kept, each chunk padded into
    the pauses around it. A chunk that must end within its last LOOKBACK_S ends at the longest pause there
    rather than the last one: that is more often the end of a sentence, and each chunk is read without
    the text before it."""
    spans = find_speech(audio, min_silence_ms=CHUNK_MIN_SILENCE_MS, max_speech_s=MAX_STRETCH_S, pad_ms=0).spans
    pad = SPEECH_PAD_MS * SAMPLE_RATE // 1000
    chunks: list[tuple[int, int]] = []
    first = 0
    while first < len(spans):
        start = max(spans[first][0] - pad, chunks[-1][1] if chunks else 0)
        last = first
        while last + 1 < len(spans) and spans[last + 1][1] + pad - start <= N_SAMPLES:
            last += 1
        if last + 1 < len(spans):  # full: end at the longest pause near the end
            near = [j for j in range(first, last + 1) if spans[j][1] + pad - start >= N_SAMPLES - LOOKBACK]
            last = max(near or [last], key=lambda j: (spans[j + 1][0] - spans[j][1], j))
        following = spans[last + 1][0] if last + 1 < len(spans) else len(audio) + 2 * pad
        end = min(spans[last][1] + min(pad, (following - spans[last][1]) // 2), len(audio), start + N_SAMPLES)
        chunks.append((start, end))
        first = last + 1
    return chunks


def chunk_map(span: tuple[int, int], total_samples: int) -> SpeechMap:
    """A chunk's times -> the input's: the chunk is one stretch of the original audio."""
    return SpeechMap((span,), total_samples)


class ChunkedRun:
    """The jobs of one input's chunks (for each chunk, one job per task of the plan), with progress
    reported in time order: a chunk's rows are handed on once every chunk before it is done, whatever
    order the batches finish them in. `language_source` is the audio the language is named from (None:
    given, or each chunk its own)."""

    def __init__(self, spans: Sequence[tuple[int, int]], plan: TaskPlan, batch_size: int,
                 progress: ProgressCallback | None):
        self.spans = list(spans)
        self.plan = plan
        self.batch_size = batch_size
        self.jobs: list[list[Job]] = [[] for _ in self.spans]
        self.progress = progress
        self.language_source: Audio | None = None
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

    def admit(self, net: Whisper) -> None:
        """Name the languages (one for the input, or one per chunk, each chunk's features kept for its
        first decode) and drop the jobs the plan does not run in them."""
        source = self.language_source
        if source is not None:
            if source.language is None:
                longform.name_languages(net, [source], self.all_jobs[0].tokenizer)
            for job in self.all_jobs:
                job.audio.language = source.language
        longform.detect_languages(net, self.all_jobs)
        self.jobs = [[job for job in jobs if self.plan.runs(job.options.task, job.language)] for jobs in self.jobs]
        for chunk, jobs in enumerate(self.jobs):  # a chunk with no job left counts as done
            for task in {job.options.task for jobs in self.jobs for job in jobs} - {j.options.task for j in jobs}:
                self._waiting.setdefault(task, [None] * len(self.spans))[chunk] = []

    def ready(self) -> list[Job]:
        """The unfinished jobs of the first `batch_size` chunks not yet done: earlier chunks first, so
        that rows can be shown from the start while the rest decodes."""
        unfinished = [jobs for jobs in self.jobs if not all(job.done for job in jobs)]
        return [job for jobs in unfinished[: self.batch_size] for job in jobs if not job.done]

    @property
    def done(self) -> bool:
        return all(job.done for job in self.all_jobs)

    @property
    def all_jobs(self) -> list[Job]:
        return [job for jobs in self.jobs for job in jobs]

    def result(self, task: str) -> dict:
        """The task's result over the whole input, shaped as sequential decoding gives it. Where chunks
        were heard in different languages each segment names its own; the translation of a talk that is
        partly English takes the English chunks' transcript."""
        segments: list[dict] = []
        first: Job | None = None
        languages = {job.language for job in self.all_jobs}
        for (start, _), jobs in zip(self.spans, self.jobs, strict=True):
            job = next((j for j in jobs if j.options.task == task), None)
            if job is None and task == "translate" and len(languages) > 1:
                job = next((j for j in jobs if j.language == "en"), None)
            if job is None:
                continue
            first = first or job
            for segment in job.segments:
                segment = {**segment, "id": len(segments), "seek": segment["seek"] + start // HOP_LENGTH}
                if len(languages) > 1:
                    segment["language"] = job.language
                segments.append(segment)
        return {
            "text": "".join(segment["text"] for segment in segments),
            "segments": segments,
            "language": first.language if first else None,
            "language_probs": first.language_probs if first else None,
        }

    def results(self) -> dict[str, dict | None]:
        """{task: result} over the whole input; None for a task the plan ran on no chunk (the translation
        of English speech)."""
        results: dict[str, dict | None] = dict.fromkeys(TASKS)
        for task in self.plan.tasks:
            if not self.spans or any(job.options.task == task for job in self.all_jobs):
                results[task] = self.result(task)
        return results
