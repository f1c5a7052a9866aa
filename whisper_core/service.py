"""The one model a process shares among all its users: loaded once, warmed up, and owned by one worker
thread that steps every waiting request's windows together, so that concurrent users share batches."""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import transcribe as longform
from .speech_model import SpeechModel, load_model
from .transcribe import Job, ProgressCallback

MAX_BATCH_WINDOWS = 8  # windows decoded together in one step
MAX_WAIT_S = 0.05  # how long a new step waits for more requests to join
WARMUP_SECONDS = 1.0


@dataclass
class _Request:
    jobs: list[Job]
    skip_translation: bool
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    results: dict[str, dict | None] = field(default_factory=dict)
    admitted: bool = False


@dataclass
class ServiceStats:
    """What the worker did: how many steps, and the most windows decoded in one (batching at work)."""

    steps: int = 0
    windows: int = 0
    largest_step: int = 0
    requests: int = 0


class TranscriptionService:
    """Serve transcriptions from one model. `submit` blocks its caller until the request is done; the
    worker interleaves all requests in flight, window by window."""

    def __init__(self, model: SpeechModel, *, max_batch: int = MAX_BATCH_WINDOWS, max_wait: float = MAX_WAIT_S):
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.stats = ServiceStats()
        self._incoming: queue.Queue[_Request] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="whisper-worker", daemon=True)
        self._worker.start()

    @property
    def can_translate(self) -> bool:
        return self.model.can_translate

    def warm_up(self) -> None:
        """One short decode at start, so that the first visitor does not pay for lazy initialisation."""
        self.submit(np.zeros(int(16000 * WARMUP_SECONDS), dtype=np.float32), temperature=0.0)
        self.stats = ServiceStats()

    def submit(
        self,
        audio: np.ndarray,
        *,
        tasks: Sequence[str] = ("transcribe", "translate"),
        translate_english: bool = False,
        progress: ProgressCallback | None = None,
        **options,
    ) -> dict[str, dict | None]:
        """Run `tasks` on `audio`; returns {task: result}. A translation is None when it is not needed
        (the speech is English, unless `translate_english`) or the model cannot translate."""
        # The log-mel (and voice detection) is computed in the caller's thread, beside the worker.
        prepared = self.model.prepare(audio, vad_filter=options.get("vad_filter", False))
        if "translate" in tasks and not self.can_translate:
            tasks = [t for t in tasks if t != "translate"]
        jobs = [self.model.job(prepared, progress, task=task, **options) for task in tasks]
        request = _Request(jobs, skip_translation=not translate_english)
        self._incoming.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        results: dict[str, dict | None] = {"transcribe": None, "translate": None}
        results.update(request.results)
        return results

    def _work(self) -> None:
        active: list[_Request] = []
        rotation = itertools.count()
        while True:
            if not active:
                active.append(self._incoming.get())
            self._drain(active)
            self._admit([r for r in active if not r.admitted])
            jobs = [job for r in active for job in r.jobs if not job.done]
            if len(jobs) > self.max_batch:  # take turns when more windows wait than a batch holds
                start = next(rotation) % len(jobs)
                jobs = (jobs[start:] + jobs[:start])[: self.max_batch]
            self._step(active, jobs)
            for request in [r for r in active if r.error or all(job.done for job in r.jobs)]:
                active.remove(request)
                if request.error is None:
                    request.results = {job.options.task: job.result() for job in request.jobs}
                request.done.set()

    def _drain(self, active: list[_Request]) -> None:
        """Take what else is waiting; wait a moment for company when the batch is not full."""
        try:
            while True:
                timeout = self.max_wait if len(active) < self.max_batch else 0
                active.append(self._incoming.get(timeout=timeout) if timeout else self._incoming.get_nowait())
        except queue.Empty:
            pass

    def _admit(self, new: list[_Request]) -> None:
        """Name the language of new requests together; drop translations of English speech."""
        for request in new:
            request.admitted = True
        jobs = [job for r in new for job in r.jobs]
        try:
            longform.detect_languages(self.model.net, jobs)
        except Exception:
            for request in new:
                self._isolate(request, lambda r: longform.detect_languages(self.model.net, r.jobs))
        for request in new:
            if request.skip_translation and any(j.language == "en" for j in request.jobs):
                request.jobs = [j for j in request.jobs if j.options.task != "translate"]
        self.stats.requests += len(new)

    def _step(self, active: list[_Request], jobs: list[Job]) -> None:
        """One shared step; if it fails, each request is retried alone so that one bad input only
        fails its own request."""
        if not jobs:
            return
        try:
            longform.step(self.model.net, jobs)
        except Exception:
            for request in active:
                mine = [j for j in request.jobs if j in jobs]
                if mine and request.error is None:
                    self._isolate(request, lambda _r, mine=mine: longform.step(self.model.net, mine))
            return
        self.stats.steps += 1
        self.stats.windows += len(jobs)
        self.stats.largest_step = max(self.stats.largest_step, len(jobs))

    @staticmethod
    def _isolate(request: _Request, action) -> None:
        try:
            action(request)
        except Exception as e:  # reported to that request's caller only
            request.error = e


_shared: TranscriptionService | None = None
_shared_lock = threading.Lock()


def get_service() -> TranscriptionService:
    """The process's service, created (model loaded and warmed up) on first use. `WHISPER_MODEL` and
    `WHISPER_DEVICE` choose the model and the device; `WHISPER_INT8=1` the CPU's int8 mode."""
    global _shared
    with _shared_lock:
        if _shared is None:
            model = load_model(os.environ.get("WHISPER_MODEL") or None, os.environ.get("WHISPER_DEVICE") or None,
                               int8=os.environ.get("WHISPER_INT8", "0").lower() in ("1", "true", "yes"))
            _shared = TranscriptionService(model)
            _shared.warm_up()
        return _shared
