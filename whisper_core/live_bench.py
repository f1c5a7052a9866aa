"""Live benchmark: files played as microphones into live sessions on ONE shared TranscriptionService, at
`--speed` times real time, as the page would send them. Prints markdown tables of

- latency: per committed word, `fed_s - word end` (audio pushed when the word was committed, less where
  it ends in the audio), median and 90th percentile per file and pooled. Once the whole file is pushed,
  `fed_s` stops at its length while a stream that fell behind still commits: from then on the wall clock
  times speed counts, what a listener would have heard by the commit;
- quality: the WER (CER for ja/zh) of the final committed text against the manifest's reference, beside
  the offline transcript's (`service.submit`, greedy: temperature 0, the same model);
- capacity (`--streams`): N streams at once of one ~3-minute file, without and with a file upload looped
  beside them; whether each N kept real time.

Real-time rule: a run keeps real time when its latency does not grow, the median over the words ending in
the last third of the file less the median over the first third below GROWTH_LIMIT_S, and its final text
came within END_LAG_LIMIT_S (wall clock) of the audio's end. At `--speed 0` there is no clock to keep.
Every run also says how many cores other processes kept busy meanwhile: on a shared machine, a run beside
other work measures that work as much as this one.

    python -m whisper_core.live_bench FILE... [--speed 1.0] [--capacity FILE] [--streams 1,2,3]
                                      [--with_upload FILE] [--upload_batch_size 8] [--task transcribe]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio import SAMPLE_RATE, load_audio
from .bench import _cpu_model, _progress, _table
from .live import LiveSession, Update, play
from .metrics import error_rate
from .options import make_options
from .service import Finished, TranscriptionService
from .speech_model import load_model

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
CAPACITY_FILE = SHARED_AUDIO / "fr_smartphone_podcast.mp3"
UPLOAD_FILE = SHARED_AUDIO / "en_ljspeech_printing_longform.ogg"
CHUNK_S = 0.5  # what the page sends at a time
MEDIAN_TARGET_S = 3.0
P90_TARGET_S = 5.0
WER_MARGIN_POINTS = 3.0
WER_TARGET_LANGUAGES = ("en", "fr", "es")
REAL_TIME_STREAMS = 2
GROWTH_LIMIT_S = 1.5
END_LAG_LIMIT_S = 5.0
REFERENCE_KEYS = {"transcribe": "reference", "translate": "english"}


@dataclass(frozen=True)
class Commit:
    """One committed word: where it ends in the audio, and how much had been heard when it came (the audio
    pushed; past the file's end, the wall clock times speed)."""

    word_end: float
    heard_s: float

    @property
    def lag_s(self) -> float:
        return self.heard_s - self.word_end


@dataclass(frozen=True)
class Latency:
    """Lag statistics over some committed words (None when there are none)."""

    words: int
    median_s: float | None
    p90_s: float | None


@dataclass(frozen=True)
class StreamRun:
    """One task of one file played through one live session."""

    task: str
    duration_s: float
    commits: tuple[Commit, ...]
    text: str | None  # None: the plan does not run the task for the language heard
    language: str | None
    steps: int
    step_s: float  # all step() calls together
    longest_step_s: float
    end_lag_s: float | None  # wall seconds from the last chunk pushed to the final text; None at speed 0


@dataclass(frozen=True)
class FileResult:
    """One file live and offline, both scored against the manifest's reference (None without one)."""

    file: str
    language: str | None  # the manifest's
    reference_kind: str | None
    live: StreamRun
    live_wer: float | None
    offline_wer: float | None
    offline_s: float
    others_cores: float | None  # CPU other processes took meanwhile (the machine may be shared)


@dataclass(frozen=True)
class CapacityRun:
    """N streams of one file at once, with or without an upload decoding beside them."""

    streams: int
    upload: bool
    runs: tuple[StreamRun, ...]
    upload_windows: int  # windows of the upload decoded meanwhile: did it get any of the service
    upload_passes: int
    others_cores: float | None  # CPU other processes took meanwhile (the machine may be shared)


@dataclass(frozen=True)
class Verdict:
    """The real-time rule applied to one capacity run (`kept` None at speed 0)."""

    first: Latency
    last: Latency
    growth_s: float | None
    end_lag_s: float | None
    kept: bool | None


# ---------------------------------------------------------------- statistics


def latency(lags: Sequence[float]) -> Latency:
    """Median and 90th percentile (linear interpolation) of per-word lags; None for no words."""
    if not lags:
        return Latency(0, None, None)
    return Latency(len(lags), float(np.median(lags)), float(np.percentile(lags, 90)))


def heard_by(fed_s: float, elapsed_s: float, duration_s: float, speed: float) -> float:
    """Audio heard by a commit: the seconds pushed, and once all of the file is, the wall clock times speed
    (a stream that fell behind commits its last words long after the audio ended)."""
    return max(fed_s, elapsed_s * speed) if fed_s >= duration_s else fed_s


def lags_between(commits: Sequence[Commit], start_s: float, end_s: float) -> list[float]:
    """The lags of the words that end in [start_s, end_s): a part of the file, to see latency grow."""
    return [c.lag_s for c in commits if start_s <= c.word_end < end_s]


def thirds(runs: Sequence[StreamRun]) -> tuple[Latency, Latency]:
    """Latency over the words ending in the first and in the last third of each run's audio, pooled."""
    first = [lag for r in runs for lag in lags_between(r.commits, 0.0, r.duration_s / 3)]
    last = [lag for r in runs for lag in lags_between(r.commits, 2 * r.duration_s / 3, float("inf"))]
    return latency(first), latency(last)


def keeps_real_time(first: Latency, last: Latency, end_lag_s: float | None) -> bool | None:
    """The rule in the module's docstring: latency not growing, the final text soon after the end. None
    without a clock (speed 0); False when a third has no words to judge by."""
    if end_lag_s is None:
        return None
    if first.median_s is None or last.median_s is None:
        return False
    return last.median_s - first.median_s < GROWTH_LIMIT_S and end_lag_s <= END_LAG_LIMIT_S


def verdict(run: CapacityRun) -> Verdict:
    """The slowest stream's end counts: every one of them must keep up."""
    first, last = thirds(run.runs)
    lags = [r.end_lag_s for r in run.runs]
    end_lag = None if None in lags else max(lags)
    growth = None if first.median_s is None or last.median_s is None else last.median_s - first.median_s
    return Verdict(first, last, growth, end_lag, keeps_real_time(first, last, end_lag))


# ---------------------------------------------------------------- running


def cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, of this process) so far; None without /proc/stat."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    mine = os.times()
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), mine.user + mine.system


class OtherLoad:
    """How many cores other processes kept busy over a stretch: a shared machine's numbers need it."""

    def __init__(self) -> None:
        self._began, self._cpu = time.monotonic(), cpu_seconds()

    def cores(self) -> float | None:
        now = cpu_seconds()
        if now is None or self._cpu is None:
            return None
        machine, mine = (after - before for after, before in zip(now, self._cpu, strict=True))
        return max(0.0, machine - mine) / (time.monotonic() - self._began)


def machine_line() -> str:
    """The CPU and what matters for its speed here: its vector extensions and torch's threads."""
    caps = torch.cpu.get_capabilities()
    if caps.get("avx512_f"):
        extras = [name for name, flag in (("VNNI", "avx512_vnni"), ("BF16", "avx512_bf16")) if caps.get(flag)]
        vectors = "AVX-512" + (f" ({', '.join(extras)})" if extras else "")
    else:
        vectors = "AVX2" if caps.get("avx2") else "no AVX2"
    return (f"Machine: {_cpu_model()}, {len(os.sched_getaffinity(0))} cores, {vectors}, torch {torch.__version__} "
            f"(kernels {torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} torch threads; "
            f"load average {os.getloadavg()[0]:.2f} at start.")


@functools.lru_cache
def _manifest(folder: Path) -> dict[str, dict]:
    path = folder / "manifest.json"
    return {e["file"]: e for e in json.loads(path.read_text())} if path.is_file() else {}


def manifest_entry(file: str) -> dict:
    """The file's entry in the manifest.json beside it ({} when there is none)."""
    path = Path(file).resolve()
    return _manifest(path.parent).get(path.name, {})


class TimedSession(LiveSession):
    """A live session that counts its step() calls and their seconds: where a live cycle's time goes."""

    steps = 0
    step_s = 0.0
    longest_step_s = 0.0

    def step(self) -> Update:
        began = time.perf_counter()
        try:
            return super().step()
        finally:
            took = time.perf_counter() - began
            self.steps += 1
            self.step_s += took
            self.longest_step_s = max(self.longest_step_s, took)


def play_stream(service: TranscriptionService, mode: str, samples: np.ndarray, *, speed: float,
                chunk_s: float) -> tuple[StreamRun, ...]:
    """One file through a fresh live session, the language detected as the page's would be: a run per task
    of the mode (`both`: the transcript and the translation, from the same decodes)."""
    plan = service.model.plan(mode)
    session = TimedSession(service, plan, make_options(temperature=0.0))
    commits: dict[str, list[Commit]] = {task: [] for task in plan.tasks}

    duration = len(samples) / SAMPLE_RATE

    def report(update: Update, fed_s: float) -> None:
        heard = heard_by(fed_s, time.monotonic() - began, duration, speed)
        for task, lines in update.committed.items():
            commits[task].extend(Commit(w["end"], heard) for line in lines for w in line["words"])

    began = time.monotonic()
    play(session, samples, chunk_s=chunk_s, speed=speed, report=report)
    end_lag = time.monotonic() - began - duration / speed if speed > 0 else None
    return tuple(StreamRun(task, duration, tuple(commits[task]), session.text(task), session.language,
                           session.steps, session.step_s, session.longest_step_s, end_lag) for task in plan.tasks)


def score(entry: dict, task: str, text: str | None) -> float | None:
    """WER (CER for ja/zh) against the manifest's reference for the task; None without one."""
    reference = entry.get(REFERENCE_KEYS[task])
    if not reference or text is None:
        return None
    return error_rate(reference, text, entry.get("language") if task == "transcribe" else "en")


def offline_texts(service: TranscriptionService, mode: str,
                  samples: np.ndarray) -> tuple[dict[str, str | None], float]:
    """The whole file at once through the service, greedy: each task's text, and the seconds it took."""
    began = time.perf_counter()
    results = service.submit(samples, service.model.plan(mode), make_options(temperature=0.0))
    texts = {task: result["text"] if result else None for task, result in results.items()}
    return texts, time.perf_counter() - began


def run_file(service: TranscriptionService, file: str, mode: str, *, speed: float,
             chunk_s: float) -> list[FileResult]:
    samples = load_audio(file)
    entry = manifest_entry(file)
    others = OtherLoad()
    runs = play_stream(service, mode, samples, speed=speed, chunk_s=chunk_s)
    offline, offline_s = offline_texts(service, mode, samples)
    cores = others.cores()
    return [FileResult(Path(file).name, entry.get("language"), entry.get("reference_kind"), run,
                       score(entry, run.task, run.text), score(entry, run.task, offline.get(run.task)), offline_s,
                       cores) for run in runs]


def keep_uploading(service: TranscriptionService, samples: np.ndarray, stop: threading.Event,
                   batch_size: int | None = None) -> tuple[int, int]:
    """An upload decoded again and again until `stop`, cancelled mid-file then: (windows, passes done)."""
    windows = passes = 0
    options = make_options(temperature=0.0, batch_size=batch_size)
    while not stop.is_set():
        events = service.stream(samples, service.model.plan("transcribe"), options)
        try:
            for event in events:
                if isinstance(event, Finished):
                    passes += 1
                else:
                    windows += 1
                if stop.is_set():
                    break
        finally:
            events.close()
    return windows, passes


def run_capacity(service: TranscriptionService, mode: str, samples: np.ndarray, upload: np.ndarray | None,
                 streams: int, *, speed: float, chunk_s: float, upload_batch_size: int | None = None) -> CapacityRun:
    """`streams` sessions started together on the file, with the upload (if any) beside them throughout;
    every task of every stream must keep real time."""
    stop, others = threading.Event(), OtherLoad()
    with ThreadPoolExecutor(streams + 1) as pool:
        uploading = (pool.submit(keep_uploading, service, upload, stop, upload_batch_size)
                     if upload is not None else None)
        playing = [pool.submit(play_stream, service, mode, samples, speed=speed, chunk_s=chunk_s)
                   for _ in range(streams)]
        runs = tuple(run for p in playing for run in p.result())
        stop.set()
        windows, passes = uploading.result() if uploading else (0, 0)
    return CapacityRun(streams, upload is not None, runs, windows, passes, others.cores())


def load_service(int8: bool = False) -> TranscriptionService:
    """The bundled model on one service, warmed up as the app's is."""
    service = TranscriptionService(load_model(int8=int8))
    service.warm_up()
    return service


# ---------------------------------------------------------------- the report


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _points(result: FileResult) -> float | None:
    if result.live_wer is None or result.offline_wer is None:
        return None
    return 100 * (result.live_wer - result.offline_wer)


def _file_row(r: FileResult) -> list[str]:
    run, lat = r.live, latency([c.lag_s for c in r.live.commits])
    points = _points(r)
    mean_step = run.step_s / run.steps if run.steps else None
    return [r.file, run.task, f"{r.language or '—'} / {run.language or '—'}", f"{run.duration_s:.1f}", str(lat.words),
            _s(lat.median_s), _s(lat.p90_s), _rate(r.live_wer), _rate(r.offline_wer),
            "—" if points is None else f"{points:+.1f}", r.reference_kind or "—", str(run.steps), _s(mean_step),
            _s(run.longest_step_s), _s(run.end_lag_s), f"{r.offline_s:.1f}", _s(r.others_cores)]


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def file_section(results: Sequence[FileResult]) -> str:
    """A row per file and task and a pooled row per task, then the latency and WER targets, each met or
    missed."""
    rows = [_file_row(r) for r in results]
    pooled = {}
    for task in dict.fromkeys(r.live.task for r in results):
        of_task = [r for r in results if r.live.task == task]
        pooled[task] = latency([c.lag_s for r in of_task for c in r.live.commits])
        rows.append(["all, pooled", task, "", f"{sum(r.live.duration_s for r in of_task):.1f}",
                     str(pooled[task].words), _s(pooled[task].median_s), _s(pooled[task].p90_s)] + [""] * 10)
    headers = ["file", "task", "language (manifest / heard)", "audio s", "words",
               f"latency median s (≤ {MEDIAN_TARGET_S:g})", f"latency p90 s (≤ {P90_TARGET_S:g})", "live WER",
               "offline WER", f"Δ points (≤ {WER_MARGIN_POINTS:g})", "reference", "steps", "mean step s",
               "longest step s", "final text s after end", "offline s", "others' CPU, cores"]
    lines = [_table(headers, rows)]
    for task, lat in pooled.items():
        if lat.median_s is not None:
            lines.append(f"One stream, pooled, {task}: latency median {lat.median_s:.2f} s ≤ {MEDIAN_TARGET_S:g} s: "
                         f"{_met(lat.median_s <= MEDIAN_TARGET_S)}; p90 {lat.p90_s:.2f} s ≤ {P90_TARGET_S:g} s: "
                         f"{_met(lat.p90_s <= P90_TARGET_S)}.")
    judged = [r for r in results if r.language in WER_TARGET_LANGUAGES and _points(r) is not None]
    if judged:
        missed = [f"{r.file}, {r.live.task} ({_points(r):+.1f})" for r in judged if _points(r) > WER_MARGIN_POINTS]
        lines.append(f"Live WER within {WER_MARGIN_POINTS:g} points of offline ({', '.join(WER_TARGET_LANGUAGES)}): "
                     f"{len(judged) - len(missed)} of {len(judged)} rows"
                     + (f"; MISSED on {', '.join(missed)}." if missed else ": met."))
    return "\n\n".join(lines)


def _capacity_row(run: CapacityRun) -> list[str]:
    v = verdict(run)
    steps = sum(r.steps for r in run.runs)
    mean_step = sum(r.step_s for r in run.runs) / steps if steps else None
    kept = {None: "n/a", True: "yes", False: "NO"}[v.kept]
    upload = f"{run.upload_windows} windows, {run.upload_passes} passes" if run.upload else "none"
    return [str(run.streams), upload, f"{_s(v.first.median_s)} / {_s(v.first.p90_s)}",
            f"{_s(v.last.median_s)} / {_s(v.last.p90_s)}", _s(v.growth_s), _s(v.end_lag_s), kept,
            _s(mean_step), _s(max(r.longest_step_s for r in run.runs)), _s(run.others_cores)]


def capacity_section(file: str, upload: str, runs: Sequence[CapacityRun], upload_batch_size: int | None = None) -> str:
    headers = ["streams", "upload beside them (decoded meanwhile)", "first third median / p90 s",
               "last third median / p90 s", f"growth s (< {GROWTH_LIMIT_S:g})",
               f"final text s after end, slowest (≤ {END_LAG_LIMIT_S:g})", "kept real time", "mean step s",
               "longest step s", "others' CPU, cores"]
    lines = [f"File: {Path(file).name} ({runs[0].runs[0].duration_s:.1f} s), every stream started together; "
             f"upload: {Path(upload).name}, service.stream greedy"
             f"{f', batched ({upload_batch_size} chunks at once)' if upload_batch_size else ''}, looped, "
             "cancelled when the streams end. "
             f"Kept real time: last-third median latency − first-third median < {GROWTH_LIMIT_S:g} s and the "
             f"slowest stream's final text ≤ {END_LAG_LIMIT_S:g} s after the audio ended (wall clock).",
             _table(headers, [_capacity_row(r) for r in runs])]
    at_target = [r for r in runs if r.streams == REAL_TIME_STREAMS]
    if at_target and all(verdict(r).kept is not None for r in at_target):
        parts = [f"{'with' if r.upload else 'without'} upload: {_met(bool(verdict(r).kept))}" for r in at_target]
        lines.append(f"{REAL_TIME_STREAMS} streams at once keep real time: {'; '.join(parts)}.")
    return "\n\n".join(lines)


def header(args: argparse.Namespace) -> str:
    return "\n\n".join([
        machine_line(),
        f"Live: {args.chunk_s:g}-s chunks at {args.speed:g}× real time (0: as fast as decoding goes), task "
        f"{args.task}, language detected, one shared TranscriptionService (bundled base"
        f"{', int8' if args.int8 else ''}). Latency: per committed "
        "word, audio pushed when it was committed (past the file's end: wall clock × speed) − its end time. "
        "Offline: service.submit of the whole file, greedy (temperature 0), same model. A step: one "
        "LiveSession.step() call (decode of the buffer).",
        f"Targets: one stream latency median ≤ {MEDIAN_TARGET_S:g} s, p90 ≤ {P90_TARGET_S:g} s; final WER within "
        f"{WER_MARGIN_POINTS:g} points of offline on {', '.join(WER_TARGET_LANGUAGES)}; {REAL_TIME_STREAMS} "
        "streams at once keep real time.",
    ])


# ---------------------------------------------------------------- command line


def _streams(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("give stream counts above 0, comma-separated: 1,2,3")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m whisper_core.live_bench",
                                description="Latency, quality and capacity of live transcription.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("files", nargs="*", metavar="FILE", help="audio files, each played through one live session")
    p.add_argument("--speed", type=float, default=1.0, help="times real time; 0: as fast as decoding goes")
    p.add_argument("--chunk_s", type=float, default=CHUNK_S, help="seconds of audio in each push")
    p.add_argument("--task", default="transcribe", choices=[*REFERENCE_KEYS, "both"],
                   help="both: the transcript and the English translation from one session, as the page runs")
    p.add_argument("--capacity", default=str(CAPACITY_FILE), help="the file the --streams run plays")
    p.add_argument("--streams", type=_streams, default=(), help="streams at once, e.g. 1,2,3; none: no capacity run")
    p.add_argument("--with_upload", default=str(UPLOAD_FILE), help="the upload decoded beside the streams")
    p.add_argument("--upload_batch_size", type=int, default=None,
                   help="decode the upload batched, this many chunks at once (the page's batched mode)")
    p.add_argument("--int8", action="store_true", help="the CPU's int8 mode (as WHISPER_INT8=1 runs the app)")
    args = p.parse_args(argv)
    if not args.files and not args.streams:
        p.error("give audio files, --streams, or both")
    if args.speed < 0 or args.chunk_s <= 0:
        p.error("--speed must be 0 or above and --chunk_s above 0")
    needed = [*args.files, *((args.capacity, args.with_upload) if args.streams else ())]
    if missing := [f for f in needed if not Path(f).is_file()]:
        p.error(f"no such file: {', '.join(missing)}")
    return args


def bench_files(service: TranscriptionService, args: argparse.Namespace) -> list[str]:
    results = []
    for file in args.files:
        _progress(f"live and offline: {file}")
        results += run_file(service, file, args.task, speed=args.speed, chunk_s=args.chunk_s)
    return ["### One stream per file", file_section(results)]


def bench_capacity(service: TranscriptionService, args: argparse.Namespace) -> list[str]:
    """Each stream count without, then with, the upload beside the streams."""
    samples, upload = load_audio(args.capacity), load_audio(args.with_upload)
    runs = []
    for streams in args.streams:
        for beside in (None, upload):
            _progress(f"capacity: {streams} streams, {'with' if beside is not None else 'without'} upload")
            runs.append(run_capacity(service, args.task, samples, beside, streams, speed=args.speed,
                                     chunk_s=args.chunk_s, upload_batch_size=args.upload_batch_size))
    return ["### Streams at once", capacity_section(args.capacity, args.with_upload, runs, args.upload_batch_size)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = [header(args)]  # before the load average moves
    service = load_service(args.int8)
    if args.files:
        sections += bench_files(service, args)
    if args.streams:
        sections += bench_capacity(service, args)
    sections.append(f"Load average {os.getloadavg()[0]:.2f} at the end.")
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
