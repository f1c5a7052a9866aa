"""The one model a process shares among all its users: loaded once, warmed up, and owned by one worker
thread that steps every waiting request's windows together, so that concurrent users share batches."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from . import environment, heap
from . import transcribe as longform
from .chunks import ChunkedRun
from .options import TASKS, TranscribeOptions, make_options
from .speech_model import SpeechModel, load_model
from .tasks import TaskPlan
from .transcribe import Job

# Windows decoded together in one step. A CPU's step costs about the sum of its windows' work, so a small
# batch keeps each request moving; a GPU's step costs little more at 32 windows than at 8.
MAX_BATCH_WINDOWS = {"cpu": 8, "cuda": 32}
MAX_WAIT_S = 0.05  # how long a new step waits for more requests to join
WARMUP_SECONDS = 1.0
# The heap goes back to the system once the worker has had nothing to do this long: the callers free
# their requests' audio and results only after their answers, so a trim at the last answer keeps those.
GIVE_BACK_AFTER_S = 0.5


@dataclass(frozen=True)
class Progress:
    """A window done: the segments it added to `task` (often none) and the fraction of the audio done."""

    task: str
    segments: list[dict]
    fraction: float


@dataclass(frozen=True)
class Finished:
    """The request is done: {task: result}, None for a task the plan did not run."""

    results: dict[str, dict | None]


Event = Progress | Finished
Item = tuple[np.ndarray, TaskPlan, TranscribeOptions]  # one request of a batch: audio, plan, options
Outcome = dict[str, dict | None] | Exception  # a batched request's results, or the fault that failed it alone


@dataclass
class _Request:
    jobs: list[Job]
    plan: TaskPlan
    events: queue.Queue = field(default_factory=queue.Queue)  # Progress..., then Finished or an exception
    cancelled: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    admitted: bool = False
    chunked: ChunkedRun | None = None  # batched long-form: the input's chunks, `batch_size` at a time
    urgent: bool = False  # a live speaker waits on it: its windows go first

    def report(self, task: str, segments: list[dict], fraction: float) -> None:
        self.events.put(Progress(task, segments, fraction))

    def ready(self) -> list[Job]:
        """The jobs to step now: every unfinished one, or the earliest chunks' in batched mode."""
        if self.chunked is not None:
            return self.chunked.ready()
        return [job for job in self.jobs if not job.done]

    @property
    def done(self) -> bool:
        return all(job.done for job in self.jobs)

    def results(self) -> dict[str, dict | None]:
        if self.chunked is not None:
            return self.chunked.results()
        results: dict[str, dict | None] = dict.fromkeys(TASKS)
        results.update({job.options.task: job.result() for job in self.jobs})
        return results


@dataclass
class ServiceStats:
    """What the worker did: how many steps, and the most windows decoded in one (batching at work)."""

    steps: int = 0
    windows: int = 0
    largest_step: int = 0
    requests: int = 0
    cancelled: int = 0
    urgent_steps: int = 0  # steps that held a live speaker's windows
    shared_urgent_steps: int = 0  # ... and other requests' windows beside them


class TranscriptionService:
    """Serve transcriptions from one model. `stream` yields a request's progress as the worker decodes it;
    the worker interleaves all requests in flight, window by window."""

    def __init__(self, model: SpeechModel, *, max_batch: int | None = None, max_wait: float = MAX_WAIT_S,
                 urgent_company: int | None = None):
        self.model = model
        on_gpu = model.device.type == "cuda"
        self.max_batch = max_batch or MAX_BATCH_WINDOWS["cuda" if on_gpu else "cpu"]
        self.max_wait = max_wait
        # Other requests' windows that may join a step holding urgent ones. On a GPU a bigger batch costs
        # little; on a CPU every window's encoder pass costs as much as the live decode itself.
        self.urgent_company = (self.max_batch if on_gpu else 0) if urgent_company is None else urgent_company
        self.stats = ServiceStats()
        self._incoming: queue.Queue[_Request] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="whisper-worker", daemon=True)
        self._worker.start()

    def warm_up(self) -> None:
        """One short decode at start, and the voice detector's first call (batched mode), so that the
        first visitor does not pay for lazy initialisation."""
        silence = np.zeros(int(16000 * WARMUP_SECONDS), dtype=np.float32)
        for batch_size in (None, 1):
            self.submit(silence, self.model.plan("transcribe"), make_options(temperature=0.0, batch_size=batch_size))
        self.stats = ServiceStats()

    def stream(self, audio: np.ndarray, plan: TaskPlan, options: TranscribeOptions) -> Iterator[Event]:
        """Run the plan's tasks on `audio`: a Progress after each window, then Finished. Closing the
        iterator early (the visitor left) cancels the request: its windows leave the batches at the next
        step. An engine fault is raised here, in the caller's thread."""
        return self._follow(self._request(audio, plan, options))

    def decode_jobs(self, jobs: list[Job], plan: TaskPlan, *, urgent: bool = False) -> dict[str, dict | None]:
        """Jobs the caller built itself (a live session's decode of its buffer), run to the end among
        everyone else's: {task: result}, None for a task the plan drops once the language is known.
        An urgent request's windows go into the next step before any other's."""
        return self._results(self._follow(_Request(jobs, plan, urgent=urgent)))

    def stream_here(self, audio: np.ndarray, plan: TaskPlan, options: TranscribeOptions) -> Iterator[Event]:
        """`stream`, with the request stepped in the calling thread rather than by the worker: a ZeroGPU
        call runs in a forked child process, which has the model but none of the parent's threads. Nor
        has it OpenMP's thread team: torch is set to one CPU thread, or its first parallel operation on
        the CPU (the voice detector's, say) would wait forever for threads that were not forked."""
        torch.set_num_threads(1)
        for _, event in self._step_here([self._request(audio, plan, options)]):
            if isinstance(event, Exception):
                raise event
            yield event

    def submit_here(self, items: Sequence[Item]) -> list[Outcome]:
        """Several requests (audio, plan, options) stepped together in the calling thread, their windows
        sharing each step as the worker's would: one ZeroGPU call for a batch of users. Each slot holds
        that request's {task: result}, or the exception that failed it alone, so that one user's fault
        costs the others nothing; the caller says it to that user."""
        torch.set_num_threads(1)  # before the log-mels and the voice detector: see `stream_here`
        slots = [self._prepared(item) for item in items]
        requests = [slot for slot in slots if isinstance(slot, _Request)]
        ends = {id(request): event for request, event in self._step_here(requests) if not isinstance(event, Progress)}
        return [slot if isinstance(slot, Exception) else _outcome(ends[id(slot)]) for slot in slots]

    def submit(self, audio: np.ndarray, plan: TaskPlan, options: TranscribeOptions) -> dict[str, dict | None]:
        """`stream` to the end: {task: result}."""
        return self._results(self.stream(audio, plan, options))

    @staticmethod
    def _results(events: Iterator[Event]) -> dict[str, dict | None]:
        for event in events:
            if isinstance(event, Finished):
                return event.results
        raise AssertionError("a request's stream ends with Finished")

    def _follow(self, request: _Request) -> Iterator[Event]:
        self._incoming.put(request)
        try:
            while True:
                event = request.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            request.cancelled.set()  # nothing to cancel once finished

    def _request(self, audio: np.ndarray, plan: TaskPlan, options: TranscribeOptions) -> _Request:
        """The request's jobs, with the log-mel (and voice detection) computed in the caller's thread,
        beside the worker."""
        request = _Request([], plan)
        if options.batch_size:
            request.chunked = self.model.chunked(audio, plan, options, request.report)
            request.jobs = request.chunked.all_jobs
        else:
            prepared = self.model.prepare(audio, vad_filter=options.vad_filter)
            request.jobs = self.model.jobs(prepared, plan, options, request.report)
        return request

    def _prepared(self, item: Item) -> _Request | Exception:
        """`_request`, or the fault that stopped it (audio the engine cannot take), kept for its slot."""
        try:
            return self._request(*item)
        except Exception as e:
            return e

    def _step_here(self, requests: list[_Request]) -> Iterator[tuple[_Request, Event | Exception]]:
        """The worker's turns, taken by the calling thread over these requests alone until all are done:
        each request's events as they come, an exception being its last."""
        active, rotation = list(requests), itertools.count()
        while active:
            self._turn(active, rotation)
            for request in requests:
                while not request.events.empty():
                    yield request, request.events.get_nowait()

    def _work(self) -> None:
        active: list[_Request] = []
        rotation = itertools.count()
        while True:
            if not active:
                try:
                    active.append(self._incoming.get(timeout=GIVE_BACK_AFTER_S))
                except queue.Empty:
                    heap.give_back()  # the load has ended: what it needed goes back to the system
                    active.append(self._incoming.get())
            self._drain(active)
            self._turn(active, rotation, yielding=True)

    def _turn(self, active: list[_Request], rotation: Iterator[int], *, yielding: bool = False) -> None:
        """One step of every request in flight: new ones admitted, finished ones answered. `yielding`
        (the worker's turns): a step without a live speaker's windows lets one that arrives meanwhile go
        first, between two of its encoder passes or tokens."""
        self._drop_cancelled(active)
        if not active:
            return
        self._admit([r for r in active if not r.admitted])
        urgent = [job for r in active if r.error is None and r.urgent for job in r.ready()]
        others = [job for r in active if r.error is None and not r.urgent for job in r.ready()]
        room = min(self.urgent_company, self.max_batch - len(urgent)) if urgent else self.max_batch
        jobs = _take_turns(urgent, self.max_batch, rotation) + _take_turns(others, room, rotation)
        self._step(active, jobs, yield_to_urgent=yielding and not urgent)
        self._finish_done(active)

    def _finish_done(self, active: list[_Request]) -> None:
        for request in [r for r in active if r.error or r.done]:
            active.remove(request)
            self._finish(request)

    def _finish(self, request: _Request) -> None:
        if request.error is not None:
            request.events.put(request.error)
            return
        request.events.put(Finished(request.results()))

    def _drop_cancelled(self, active: list[_Request]) -> None:
        for request in [r for r in active if r.cancelled.is_set()]:
            active.remove(request)
            self.stats.cancelled += 1

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
        for request in [r for r in new if r.chunked is not None]:  # its own language rule, per input or chunk
            self._isolate(request, lambda r: r.chunked.admit(self.model.net))
            request.jobs = request.chunked.all_jobs
        plain = [r for r in new if r.chunked is None]
        try:
            longform.detect_languages(self.model.net, [job for r in plain for job in r.jobs])
        except Exception:
            for request in plain:
                self._isolate(request, lambda r: longform.detect_languages(self.model.net, r.jobs))
        for request in plain:
            request.jobs = [job for job in request.jobs if request.plan.runs(job.options.task, job.language)]
        self.stats.requests += len(new)

    def _step(self, active: list[_Request], jobs: list[Job], *, yield_to_urgent: bool = False) -> None:
        """One shared step; if it fails, each request is retried alone so that one bad input only
        fails its own request. `yield_to_urgent`: live speakers who ask during the step are served at
        its next pause (a CPU's step of eight windows takes seconds)."""
        if not jobs:
            return
        try:
            for _ in longform.step_pausing(self.model.net, jobs):
                if yield_to_urgent:
                    self._serve_urgent(active, busy={id(job) for job in jobs})
        except Exception:
            for request in active:
                mine = [j for j in request.jobs if j in jobs]
                if mine and request.error is None:
                    self._isolate(request, lambda _r, mine=mine: longform.step(self.model.net, mine))
            return
        self.stats.steps += 1
        self.stats.windows += len(jobs)
        urgent = {id(job) for r in active if r.urgent for job in r.jobs}
        if any(id(job) in urgent for job in jobs):
            self.stats.urgent_steps += 1
            self.stats.shared_urgent_steps += any(id(job) not in urgent for job in jobs)
        self.stats.largest_step = max(self.stats.largest_step, len(jobs))

    def _serve_urgent(self, active: list[_Request], busy: set[int]) -> None:
        """Live speakers' requests that arrived during a step: stepped now, each to its end, between two
        pauses of that step (whose own jobs, `busy`, wait where they are)."""
        while True:
            while not self._incoming.empty():
                active.append(self._incoming.get_nowait())
            urgent = [r for r in active if r.urgent and r.error is None and not r.cancelled.is_set()]
            self._admit([r for r in urgent if not r.admitted])
            jobs = [job for r in urgent if r.error is None for job in r.ready() if id(job) not in busy]
            if jobs:
                self._step(active, jobs[: self.max_batch])
            for request in [r for r in urgent if r.error or r.done]:  # the others may be in the paused step
                active.remove(request)
                self._finish(request)
            if not jobs:
                return

    @staticmethod
    def _isolate(request: _Request, action) -> None:
        try:
            action(request)
        except Exception as e:  # reported to that request's caller only
            request.error = e


def _outcome(end: Finished | Exception) -> Outcome:
    """A batched request's last event as its slot: the caller wants results, not the stream around them."""
    return end.results if isinstance(end, Finished) else end


def _take_turns(jobs: list[Job], room: int, rotation: Iterator[int]) -> list[Job]:
    """At most `room` of the jobs, starting further along each time, when more wait than there is room."""
    if len(jobs) <= room:
        return jobs
    if room <= 0:
        return []
    start = next(rotation) % len(jobs)
    return (jobs[start:] + jobs[:start])[:room]


_shared: TranscriptionService | None = None
_shared_lock = threading.Lock()


def get_service() -> TranscriptionService:
    """The process's service, created (model loaded and warmed up) on first use. `WHISPER_MODEL` and
    `WHISPER_DEVICE` choose the model and the device; `WHISPER_INT8=1` the CPU's int8 mode. On a ZeroGPU
    Space (`SPACES_ZERO_GPU`), where only the decorated calls have the GPU, the warm-up is left out."""
    global _shared
    with _shared_lock:
        if _shared is None:
            model = load_model(environment.text("WHISPER_MODEL"), environment.text("WHISPER_DEVICE"),
                               int8=environment.flag("WHISPER_INT8"))
            _shared = TranscriptionService(model)
            if not environment.flag("SPACES_ZERO_GPU"):  # there, the main process never has the GPU
                _shared.warm_up()
        return _shared
