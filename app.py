"""Whisper speech recognition and English translation: the web page and API of a Hugging Face Space.

Reads top to bottom: settings, the one shared model, the handlers (one per input, all feeding one results
area), the API endpoints, the layout, launch. The engine lives in whisper_core; the strings and files the
page shows are made in whisper_core.presentation.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # set before gradio is imported: no calls home

import contextlib
import dataclasses
import functools
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio import FileData

from whisper_core import environment
from whisper_core import presentation as show
from whisper_core.audio import SAMPLE_RATE
from whisper_core.live import LiveBusy, LiveFeed, LivePlaces, read_wav
from whisper_core.media import Limits, Media, MediaError, load_file, load_url
from whisper_core.options import OptionsError, TranscribeOptions, make_options
from whisper_core.service import Event, Finished, Item, SpeechModel, get_service
from whisper_core.tasks import MODES, TaskPlan

try:  # Hugging Face ZeroGPU attaches a GPU for the duration of each call to a function it wraps
    import spaces
except ImportError:
    spaces = None


CONCURRENCY = environment.positive_int("WHISPER_CONCURRENCY", 4)  # requests decoded at once; they share batches
QUEUE_SIZE = environment.positive_int("WHISPER_QUEUE_SIZE", 16)  # requests that may wait; more are told "busy"
MODEL_GROUP = "whisper-model"  # every event that uses the model is in this one concurrency group
LIMITS = Limits.from_env()  # WHISPER_MAX_DURATION, WHISPER_MAX_BYTES, WHISPER_URL_TIMEOUT
WINDOW_S = 30  # seconds of audio in one decoding window
MAX_BEAM = 10
# Batched: text after this much silence that looks invented is dropped (a chunk keeps its pauses, and
# without the rule the model looped on a line over a noisy recording). Sequential decoding hears the
# detector's speech alone, where the rule found no invention to drop and cut real words (README, Accuracy).
HALLUCINATION_SILENCE_S = 2.0
BATCH_CHUNKS = 8  # batched decoding: pieces of speech decoded at once
DEFAULT_BATCHED = False  # sequential reads a little better in the accuracy table (README); batched is faster
EXAMPLES_DIR = Path(__file__).parent / "examples"
TEMP_ROOT = Path(environment.text("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
FILES_KEPT_S = 3600  # uploads, players and downloads are deleted an hour after they were made
MAX_FILES = environment.positive_int("WHISPER_MAX_FILES", 10)  # files the Upload tab takes in one go
ERROR_SECONDS = 30  # how long an error stays on screen: long enough to read its numbers
# On a ZeroGPU Space each call to the decorated function runs in a forked child process that holds the GPU
# for as long as it asked: a start, plus a share per minute of audio and task, within the Space's cap.
ZERO_GPU = spaces is not None and environment.flag("SPACES_ZERO_GPU")
GPU_START_S = 15
GPU_S_PER_AUDIO_MINUTE = 6
MAX_GPU_S = 120
# There the API's calls that wait in the queue are handed over together, up to this many, and decoded in one
# GPU call, their windows sharing its steps (the page's handlers stream, and each keeps a call of its own).
ZERO_GPU_BATCH = environment.positive_int("WHISPER_ZERO_GPU_BATCH", 8)

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests are not news
log = logging.getLogger("app")

service = get_service()  # loads the model and warms it up: once, at start, for every user
ON_GPU = service.model.device.type == "cuda"
CAN_TRANSLATE = service.model.can_translate  # False for English-only and transcription-only (turbo) models
DEFAULT_BEAM = 5 if ON_GPU else 1  # greedy on a CPU: beams of 5 take about 1.7 times as long
DEFAULT_FALLBACK = ON_GPU  # re-decoding doubtful windows by sampling can triple the time on a CPU
# Live captions: each open session keeps a decode going, so a CPU keeps only a couple of speakers real-time.
LIVE_SESSIONS = environment.positive_int("WHISPER_LIVE_SESSIONS", 8 if ON_GPU else 2)
LIVE_MAX_S = environment.positive_int("WHISPER_LIVE_MAX_S", 300)  # seconds one live session may last
LIVE_CHUNK_S = 0.5  # the browser sends the microphone's audio this often
LIVE_IDLE_S = 30  # a live session without audio for this long (its visitor left) gives its place back
LIVE_BEHIND_S = 10  # the text this far behind the speaker: the page says the server cannot keep up
LIVE_TITLE = "Live microphone"
live_places = LivePlaces(service, LIVE_SESSIONS, LIVE_IDLE_S)
log.info("model %s on %s ready; %d model load(s) in this process", service.model.name, service.model.device,
         SpeechModel.loads)


# --- requests -----------------------------------------------------------------------------------------------


STAGES = {"both": "Transcribing and translating", "transcribe": "Transcribing", "translate": "Translating"}
FAULT = "Transcription failed on the server ({kind}). Try again in a minute; if it fails again, try a shorter file."


@dataclasses.dataclass(frozen=True)
class Request:
    """What to run, checked: the page's mode, the engine's plan for it and the options object."""

    mode: str
    plan: TaskPlan
    options: TranscribeOptions


def make_request(language: str | None, mode: str, beam_size: float, fallback: bool, initial_prompt: str | None,
                 batched: bool = DEFAULT_BATCHED) -> Request:
    """The page's and the API's settings, checked here at the edge; a wrong value is said in words."""
    try:
        plan = service.model.plan(mode)
    except ValueError:
        raise gr.Error(f"Mode must be one of {', '.join(MODES)}, not {mode!r}.", print_exception=False) from None
    if not plan.tasks:
        raise gr.Error(f"This server's model cannot translate ({plan.cannot_translate}). Choose "
                       "'Transcript only' under Options.", print_exception=False)
    if not (isinstance(beam_size, int | float) and 1 <= beam_size <= MAX_BEAM):
        raise gr.Error(f"Beam size must be a number from 1 to {MAX_BEAM}, not {beam_size!r}.", print_exception=False)
    # No invented text over silence, music or laughter (the voice detector, and in batched mode the rule
    # against invented text); words timed for the word-level subtitles; with fallback, openai-whisper's
    # temperature ladder, five samples a rung; batched, the speech cut at its pauses and the pieces decoded
    # together.
    sampling = {"best_of": 5} if fallback else {"temperature": 0.0}
    if batched:
        sampling.update(batch_size=BATCH_CHUNKS, hallucination_silence_threshold=HALLUCINATION_SILENCE_S)
    try:
        options = make_options(language=None if language in (None, "", "auto") else language,
                               beam_size=int(beam_size), initial_prompt=(initial_prompt or "").strip() or None,
                               vad_filter=True, word_timestamps=True, **sampling)
    except OptionsError as e:
        raise gr.Error(f"The options were not accepted: {e}. Change them and try again.",
                       duration=ERROR_SECONDS, print_exception=False) from e
    return Request(mode, plan, options)


def _load(loader: Callable[[], Media]) -> Media:
    """The media layer's errors are written for users: show them as they are."""
    try:
        return loader()
    except MediaError as e:
        raise gr.Error(str(e), duration=ERROR_SECONDS, print_exception=False) from e
    except Exception as e:
        log.exception("reading the input failed")
        raise gr.Error(f"This input could not be read ({type(e).__name__}). Try another file or link.",
                       duration=ERROR_SECONDS, print_exception=False) from e


def decode_on_worker(audio: np.ndarray, plan: TaskPlan, options: TranscribeOptions) -> Iterator[Event]:
    """The service's events for this request, then its results, from the worker that batches every
    user's windows. Closing it early (the visitor left) frees the request's place in the batches."""
    yield from service.stream(audio, plan, options)


def decode_here(audio: np.ndarray, plan: TaskPlan, options: TranscribeOptions) -> Iterator[Event]:
    """The same events, the request stepped by the calling process itself: a ZeroGPU call runs in a
    forked child, which has the model but not the worker thread. Events are plain, picklable values."""
    yield from service.stream_here(audio, plan, options)


def gpu_seconds(audio: np.ndarray, plan: TaskPlan, options: TranscribeOptions) -> int:
    """The GPU time a ZeroGPU call asks for, by the length of its audio and the number of tasks."""
    return gpu_seconds_for_all([(audio, plan, options)])


def gpu_seconds_for_all(items: list[Item]) -> int:
    """The GPU time one call for several requests asks for: one start, and the share of every minute of
    each request's audio and task (on a GPU their shared steps make the sum an upper bound)."""
    task_minutes = sum(len(audio) / SAMPLE_RATE / 60 * len(plan.tasks) for audio, plan, _ in items)
    return min(MAX_GPU_S, math.ceil(GPU_START_S + GPU_S_PER_AUDIO_MINUTE * task_minutes))


@dataclasses.dataclass(frozen=True)
class DecodeFailed:
    """One request's engine fault in a call for several, as a plain value: ZeroGPU pickles what its child
    returns, which an exception may not survive (its traceback never does), so the child logs it."""

    kind: str  # the exception's type name, which its user is told


def decode_all_here(items: list[Item]) -> list[dict[str, dict | None] | DecodeFailed]:
    """Several requests decoded together by the calling process, their windows sharing each step: on
    ZeroGPU, one call for a batch of API users. Each slot: that request's {task: result}, or its fault."""
    outcomes = service.submit_here(items)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            log.error("decoding failed", exc_info=outcome)
    return [DecodeFailed(type(o).__name__) if isinstance(o, Exception) else o for o in outcomes]


# The one way into the model; on ZeroGPU, the API's batches take the other.
decode = spaces.GPU(duration=gpu_seconds)(decode_here) if ZERO_GPU else decode_on_worker
decode_all = spaces.GPU(duration=gpu_seconds_for_all)(decode_all_here) if ZERO_GPU else decode_all_here


def server_fault(e: Exception) -> gr.Error:
    """An engine fault, logged, as the error its users see: the options were checked at the edge, so what
    fails here is not the visitor's doing."""
    log.error("decoding failed", exc_info=e)
    return gr.Error(FAULT.format(kind=type(e).__name__), duration=ERROR_SECONDS, print_exception=False)


def events(media: Media, request: Request) -> Iterator[Event]:
    """`decode`, with an engine fault said as a server error."""
    try:
        yield from decode(media.audio, request.plan, request.options)
    except Exception as e:
        raise server_fault(e) from e


def results_of(media: Media, request: Request) -> dict[str, dict | None]:
    return next(e.results for e in events(media, request) if isinstance(e, Finished))


PROGRESS = gr.Progress()  # a marker: Gradio hands each event its own progress tracker in its place

# --- the page's handlers --------------------------------------------------------------------------------------
# Each is given the Options as one dict {component: value} and yields updates {component: value} of the
# results area; a component left out stays as it is.


def _settings(values: dict) -> Request:
    return make_request(values[language], values[mode], values[beam_size], values[fallback],
                        values[initial_prompt], values[batched])


def _table_update(table_value: show.Table) -> dict:
    return {table: {"headers": table_value.headers, "data": table_value.rows}, row_starts: table_value.starts}


def _request_dir() -> Path:
    """A directory for one request's files under GRADIO_TEMP_DIR. Gradio serves them from there and its
    delete_cache removes them after an hour; the directories that leaves empty are removed here."""
    TEMP_ROOT.mkdir(parents=True, exist_ok=True)
    stale = time.time() - 2 * FILES_KEPT_S
    for old in TEMP_ROOT.glob("whisper-*"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < stale:
                old.rmdir()  # only an empty one goes
    return Path(tempfile.mkdtemp(prefix="whisper-", dir=TEMP_ROOT))


def _present(loader: Callable[[], Media], source: dict, request: Request, progress: gr.Progress
             ) -> Generator[dict, None, list[Path]]:
    """Load, then decode window by window into the results area; write the downloads at the end, and
    return them."""
    media = _load(loader)
    workdir = _request_dir()
    player_file = show.write_playback(media.audio, workdir / f"{show.file_stem(media.title)}.mp3")
    tasks = request.plan.requested
    yield {source_card: show.source_card(media.metadata()), player: gr.Audio(str(player_file), visible=True),
           language_line: "", downloads: gr.File(None, visible=False), last_source: source, live_tail: "",
           file_picker: gr.Radio(visible=False),
           **_table_update(show.build_table([], [], tasks=tasks))}
    stage = STAGES[request.mode]
    expected = max(1, math.ceil(media.duration / WINDOW_S))
    rows: dict[str, list[dict]] = {task: [] for task in tasks}
    windows: dict[str, int] = {}
    fractions: dict[str, float] = {}
    results: dict[str, dict | None] = {}
    progress(0.0, desc=f"{stage}: detecting the language")
    for event in events(media, request):
        if isinstance(event, Finished):
            results = event.results
            break
        rows[event.task].extend(event.segments)
        windows[event.task] = windows.get(event.task, 0) + 1
        fractions[event.task] = event.fraction
        if event.segments:
            yield _table_update(show.build_table(rows.get("transcribe", []), rows.get("translate", []), tasks=tasks))
        if request.options.batch_size:  # pieces finish many at once, in no set number
            progress(min(fractions.values()), desc=f"{stage}: {min(fractions.values()):.0%} of the speech")
            continue
        done = min(windows.values())  # after the yield: the page shows a progress that comes after the rows
        total = max(expected, done + 1)
        progress(min(fractions.values()), desc=f"{stage}: window {min(done + 1, total)} of {total}")
    progress(1.0, desc="Writing the subtitle files")
    files = show.write_downloads(workdir, show.file_stem(media.title), results["transcribe"], results["translate"])
    yield _finished(results, request, files)
    return files


def _finished(results: dict[str, dict | None], request: Request, files: list[Path]) -> dict:
    """The last update of a run: the whole table, the language line and the downloads."""
    transcript, translation = results["transcribe"], results["translate"]
    first = transcript or translation or {}
    status = request.plan.missing_translation(first.get("language"))
    final = show.build_table((transcript or {}).get("segments", []), (translation or {}).get("segments", []),
                             tasks=request.plan.requested, language=first.get("language"), status=status)
    line = show.language_line(first.get("language"), first.get("language_probs"), status,
                              found_speech=bool(final.rows), chosen=request.options.language is not None)
    return {language_line: line, downloads: gr.File([str(f) for f in files], visible=True), **_table_update(final)}


def run_url(values: dict, progress: gr.Progress = PROGRESS) -> Iterator[dict]:
    url = (values[url_box] or "").strip()
    if not url:
        raise gr.Error("Paste a link first: a YouTube video, or any page or file with audio or video.",
                       print_exception=False)
    request = _settings(values)
    progress(0.0, desc="Looking up the link")

    def loader() -> Media:
        return load_url(url, LIMITS, progress=lambda fraction, message: progress(fraction, desc=message))

    yield from _present(loader, {"url": url}, request, progress)


def run_file(values: dict, progress: gr.Progress = PROGRESS) -> Iterator[dict]:
    chosen = values[upload]
    paths = [chosen] if isinstance(chosen, str) else list(chosen or [])
    if not paths:
        raise gr.Error("Choose a file first: drop audio or video files on the box, or click it to browse.",
                       print_exception=False)
    if len(paths) > MAX_FILES:
        raise gr.Error(f"Choose at most {MAX_FILES} files at once, not {len(paths)}.", print_exception=False)
    request = _settings(values)
    if len(paths) == 1:
        progress(0.0, desc="Reading the file")
        yield from _present(lambda: load_file(paths[0], LIMITS), {"file": paths[0]}, request, progress)
        return
    yield from _present_files(paths, request, progress)


class _Share:
    """One file's part of a run over several: its stretch of the progress bar, its name in the message."""

    def __init__(self, progress: gr.Progress, index: int, count: int, name: str):
        self.progress, self.index, self.count, self.name = progress, index, count, name

    def __call__(self, fraction: float | None, desc: str = "") -> None:
        self.progress((self.index + (fraction or 0.0)) / self.count,
                      desc=f"File {self.index + 1} of {self.count} ({self.name}): {desc}")


def _kept(view: dict, run: Generator[dict, None, list[Path]]) -> Generator[dict, None, list[Path]]:
    """The run's updates passed on, the latest value of each component kept in `view`; what the run returns."""
    while True:
        try:
            update = next(run)
        except StopIteration as done:
            return done.value
        view.update(update)
        yield update


def _present_files(paths: list[str], request: Request, progress: gr.Progress) -> Iterator[dict]:
    """Several files, one after another into the results area; then a picker to show any of them again,
    and every file's downloads with a zip of them all. A file that cannot be read is said and skipped."""
    names = [f"{i + 1}. {Path(path).name}" for i, path in enumerate(paths)]
    views: dict[str, dict] = {}
    every_file: list[Path] = []
    for index, path in enumerate(paths):
        view: dict = {}
        share = _Share(progress, index, len(paths), Path(path).name)
        try:
            every_file += yield from _kept(view, _present(lambda p=path: load_file(p, LIMITS), {"file": path},
                                                          request, share))
        except gr.Error as e:
            gr.Warning(f"{Path(path).name}: {e.message}", duration=ERROR_SECONDS)
            view = {source_card: show.source_card({"title": Path(path).name}), player: gr.Audio(None, visible=False),
                    language_line: f"Not transcribed: {e.message}", last_source: {"file": path},
                    **_table_update(show.build_table([], [], tasks=request.plan.requested))}
            yield view
        views[names[index]] = {c: v for c, v in view.items() if c is not downloads and c is not file_picker}
    archive = show.write_zip(_request_dir() / "subtitles.zip", every_file)
    yield {file_picker: gr.Radio(names, value=names[-1], visible=True), file_views: views,
           downloads: gr.File([str(f) for f in [archive, *every_file]], visible=True)}


def show_file(name: str, views: dict[str, dict]) -> dict:
    """One of several files' results, shown again; the downloads (all files and the zip) stay."""
    return views.get(name, {})


def run_recording(values: dict, progress: gr.Progress = PROGRESS) -> Iterator[dict]:
    path = values[recording]
    if not path:
        raise gr.Error("Record something first: press Record, speak, then press Stop.", print_exception=False)
    request = _settings(values)
    progress(0.0, desc="Reading the recording")

    def loader() -> Media:
        return dataclasses.replace(load_file(path, LIMITS), title="Microphone recording")

    yield from _present(loader, {"recording": path}, request, progress)


# Live captions: the session is opened when recording starts, each chunk is handed to it and answered at
# once with what is committed so far (the browser sends the next chunk only then), and Stop commits the
# rest and gives the table, the player and the downloads as for a file.
REFUSED = "refused"  # the live state of a recording that got no place: its chunks are let go


def live_start(values: dict) -> dict:
    """Recording started: open a live session, or say why there is none."""
    try:
        request = _settings(values)
        feed = live_places.open(request.plan, request.options)
    except gr.Error as e:
        gr.Warning(e.message, duration=ERROR_SECONDS)
        return {live_state: REFUSED}
    except LiveBusy:
        gr.Warning(f"All {LIVE_SESSIONS} places for live captions are taken. Choose 'Record, then transcribe' "
                   "above, or try again in a minute.", duration=ERROR_SECONDS)
        return {live_state: REFUSED}
    tasks = request.plan.requested
    return {live_state: feed, source_card: show.source_card({"title": LIVE_TITLE}),
            player: gr.Audio(None, visible=False), downloads: gr.File(None, visible=False), last_source: None,
            language_line: "Listening…", live_tail: show.live_tail({}, tasks),
            **_table_update(show.build_table([], [], tasks=tasks))}


def live_chunk(chunk: str | None, feed: LiveFeed | str | None) -> dict:
    """A chunk of the microphone's audio (a WAV file): handed to the session's own thread, and the rows
    committed so far shown."""
    if not isinstance(feed, LiveFeed) or not chunk:
        return {}
    path = Path(chunk)
    try:
        samples, rate = read_wav(path.read_bytes())
    except (OSError, ValueError):
        log.warning("a live audio chunk could not be read", exc_info=True)
        return {}
    finally:
        path.unlink(missing_ok=True)  # the audio is in the session now; the recording is written on Stop
    session = feed.session
    if session.received_s < LIVE_MAX_S:
        feed.push(samples, rate)
        note = ""
    else:
        note = f"Live captions stop after {show.clock(LIVE_MAX_S)}: press Stop for the table and the files."
    if session.waiting_s > LIVE_BEHIND_S:
        note = (f"The server is busy: the text is {session.waiting_s:.0f} s behind you. It catches up when you "
                "press Stop.")
    if not feed.running:
        note = "Live captions stopped on the server: press Stop for what was written."
    plan = session.plan
    status = plan.missing_translation(session.language) if session.language else None
    rows = show.build_table(session.sentences("transcribe"), session.sentences("translate"), tasks=plan.requested,
                            language=session.language, status=status)
    line = show.language_line(session.language, session.language_probs, status,
                              chosen=session.options.language is not None) or "Listening…"
    tentative = {task: session.tentative(task) for task in plan.requested}
    return {language_line: line, live_tail: show.live_tail(tentative, plan.requested, note), **_table_update(rows)}


def live_stop(values: dict, progress: gr.Progress = PROGRESS) -> Iterator[dict]:
    """Recording stopped: the last words committed, then the table, the player and the downloads."""
    feed = values[live_state]
    if not isinstance(feed, LiveFeed):
        yield {live_state: None}
        return
    progress(0.5, desc="Writing the last words")
    try:
        feed.close()
    except Exception as e:
        log.error("live transcription failed", exc_info=e)
        raise gr.Error(f"Live transcription failed on the server ({type(e).__name__}). Try 'Record, then "
                       "transcribe' instead.", duration=ERROR_SECONDS, print_exception=False) from e
    session = feed.session
    workdir = _request_dir()
    recording_audio = session.recording()
    player_file = show.write_playback(recording_audio, workdir / "live_microphone.mp3")
    request = Request(values[mode], session.plan, session.options)
    results = session.results()
    files = show.write_downloads(workdir, "live_microphone", results["transcribe"], results["translate"])
    yield {live_state: None, live_tail: "", last_source: {"file": str(player_file)},
           source_card: show.source_card({"title": LIVE_TITLE, "duration": len(recording_audio) / SAMPLE_RATE}),
           player: gr.Audio(str(player_file), visible=True),
           **_finished(results, request, files)}


def mic_mode_shown(chosen: str) -> dict:
    live = chosen == "live"
    return {live_mic: gr.Audio(visible=live), recording: gr.Audio(visible=not live),
            mic_button: gr.Button(visible=not live)}


def run_again(values: dict, progress: gr.Progress = PROGRESS) -> Iterator[dict]:
    """A new language picked after a run: run the same input again with it."""
    source = values[last_source]
    if not source:
        yield {}
        return
    (kind, value), = source.items()
    run, box = {"url": (run_url, url_box), "file": (run_file, upload), "recording": (run_recording, recording)}[kind]
    yield from run({**values, box: value}, progress)


def play_from(starts: list[float], event: gr.SelectData) -> float:
    """The start of the clicked row; the page's script moves the player there and plays."""
    row = event.index[0] if isinstance(event.index, list | tuple) else event.index
    return starts[row] if starts and 0 <= row < len(starts) else 0.0


# --- the API ----------------------------------------------------------------------------------------------------


def _api_answer(media: Media, request: Request, results: dict[str, dict | None]) -> dict:
    """What the API returns for one request: the results, the source, and why a translation is missing."""
    first = results["transcribe"] or results["translate"] or {}
    return show.api_result(media.metadata(), results, request.plan.missing_translation(first.get("language")))


def _api_run(loader: Callable[[], Media], request: Request) -> dict:
    media = _load(loader)
    return _api_answer(media, request, results_of(media, request))


def _file_loader(file: FileData) -> Callable[[], Media]:
    """The upload's loader, however Gradio hands the file over (a FileData dict or object, a path): a
    malformed one fails when it is loaded, as that input's error."""
    return lambda: load_file(file["path"] if isinstance(file, dict) else getattr(file, "path", file), LIMITS)


def _url_loader(url: str) -> Callable[[], Media]:
    """The link's loader: made when the call is checked, run when its input is loaded."""
    return lambda: load_url(url.strip(), LIMITS)


def transcribe_file(file: FileData, language: str = "auto", mode: str = "both", beam_size: int = DEFAULT_BEAM,
                    fallback: bool = DEFAULT_FALLBACK, initial_prompt: str = "", batched: bool = DEFAULT_BATCHED
                    ) -> dict:
    """Transcribe an audio or video file and translate it to English. language: 'auto' or a code such as
    'fr'; mode: 'both', 'transcribe' or 'translate'; batched: cut the speech at its pauses and decode the
    pieces together (faster on long files). Returns {'language', 'language_probs', 'transcribe',
    'translate', 'translation_note', 'source'}; each result has 'text' and timed 'segments'."""
    request = make_request(language, mode, beam_size, fallback, initial_prompt, batched)
    return _api_run(_file_loader(file), request)


def transcribe_url(url: str, language: str = "auto", mode: str = "both", beam_size: int = DEFAULT_BEAM,
                   fallback: bool = DEFAULT_FALLBACK, initial_prompt: str = "", batched: bool = DEFAULT_BATCHED
                   ) -> dict:
    """Like /transcribe_file, for the audio behind a link (YouTube or any page or file yt-dlp can read)."""
    request = make_request(language, mode, beam_size, fallback, initial_prompt, batched)
    return _api_run(_url_loader(url), request)


Loaded = tuple[Media, Request]


def zero_gpu_batch(single: Callable[..., dict], loader: Callable[[Any], Callable[[], Media]]
                   ) -> Callable[..., tuple[list[dict]]]:
    """`single` as a Gradio batch function, for ZeroGPU: Gradio hands over the waiting calls as one list
    per parameter and takes back a tuple of one list (one per output). The inputs are checked and loaded
    side by side in this process, then the ones that loaded are decoded in one GPU call. Gradio can only
    fail a batch as a whole, so an input's own error is its answer: {"error": message}."""

    def run(sources: list, *settings: list) -> tuple[list[dict]]:
        with ThreadPoolExecutor(len(sources)) as pool:
            prepared = list(pool.map(_prepare, map(loader, sources), zip(*settings, strict=True)))
        return (_decode_prepared(prepared),)

    return functools.update_wrapper(run, single)  # the API's schema and docs describe one call, as elsewhere


def _prepare(load: Callable[[], Media], settings: tuple) -> Loaded | dict:
    """One input of a batch checked and loaded, outside the GPU call; what went wrong is that user's
    answer alone."""
    try:
        request = make_request(*settings)
        return _load(load), request
    except gr.Error as e:
        return {"error": e.message}


def _decode_prepared(prepared: list[Loaded | dict]) -> list[dict]:
    """The inputs that loaded, decoded together (no GPU asked for when none loaded); each answer in its
    input's place."""
    loaded = [p for p in prepared if isinstance(p, tuple)]
    outcomes = iter(_decode_together(loaded) if loaded else [])
    return [p if isinstance(p, dict) else _batch_answer(*p, next(outcomes)) for p in prepared]


def _decode_together(loaded: list[Loaded]) -> list[dict[str, dict | None] | DecodeFailed]:
    """One GPU call for all of them. A failure of the call itself (no GPU, its time ran out) fails the
    whole batch: no input has its results."""
    try:
        return decode_all([(media.audio, request.plan, request.options) for media, request in loaded])
    except Exception as e:
        raise server_fault(e) from e


def _batch_answer(media: Media, request: Request, outcome: dict[str, dict | None] | DecodeFailed) -> dict:
    """As the endpoint answers alone, but its engine fault is its answer: it cannot be raised for one."""
    if isinstance(outcome, DecodeFailed):
        return {"error": FAULT.format(kind=outcome.kind)}
    return _api_answer(media, request, outcome)


def status() -> dict:
    """The loaded model, how many times a model was loaded in this process (one), and the shared worker's
    counts: requests, steps, windows and the most windows decoded in one step (batching across users)."""
    return {"model": service.model.name, "device": str(service.model.device), "model_loads": SpeechModel.loads,
            "can_translate": CAN_TRANSLATE, "concurrency": CONCURRENCY, "queue_size": QUEUE_SIZE,
            "live_sessions": live_places.in_use, "live_places": LIVE_SESSIONS,
            **dataclasses.asdict(service.stats)}


# --- the page ---------------------------------------------------------------------------------------------------

LANGUAGE_CHOICES = [("Auto-detect", "auto")] + sorted(
    ((show.language_name(code), code) for code in service.model.tokenizer.languages), key=lambda c: c[0])
MIC_MODES = [("Live: words as you speak", "live"), ("Record, then transcribe", "record")]
MODE_CHOICES = [("Transcript and English translation", "both"), ("Transcript only", "transcribe"),
                ("English translation only", "translate")]
EXAMPLES = [
    ("es_reserva.mp3", "Spanish: booking a table"),
    ("it_mare.mp3", "Italian: a day at the sea"),
    ("de_zug.mp4", "German video: the train to Berlin"),
    ("en_demo.mp3", "English: nothing to translate"),
]
ON_THIS_CPU = "" if ON_GPU else " (the default on this CPU server)"
BEAM_INFO = f"1 is greedy and fastest{ON_THIS_CPU}; 5 is openai-whisper's default (slower)."
FALLBACK_INFO = ("openai-whisper's temperature fallback: fewer repeated or garbled lines, up to three times slower"
                 f"{'' if ON_GPU else ' (off by default on this CPU server)'}.")
BATCHED_INFO = ("Cut the speech at its pauses and decode the pieces together: faster on long recordings, "
                "each piece read without the text before it.")
SPOKEN = (f"speech in any of {len(service.model.tokenizer.languages)} languages"
          if service.model.is_multilingual else "English speech")
INTRO = (f"Transcribe {SPOKEN}{' and translate it to English' if CAN_TRANSLATE else ''}, with timestamps and "
         f"subtitle files. Runs OpenAI's Whisper **{service.model.name}** model on this server's "
         f"{'GPU' if ON_GPU else 'CPU'}."
         + ("" if CAN_TRANSLATE else f" It cannot translate: {service.model.translation_unavailable}."))
HINT = ('<div class="source-card"><div class="source-details">The results appear here: give a link, a '
        "recording or a file on the left and press Transcribe, or click an example.</div></div>")
BUSY = (f"The server is busy: all {QUEUE_SIZE} places in the queue are taken. Try again in a minute.")

CSS = """
.source-card {display: flex; gap: 12px; align-items: center; min-height: 2.5em;}
.source-thumb {width: 120px; max-width: 35%; aspect-ratio: 16 / 9; object-fit: cover; border-radius: 6px;}
.source-title {font-weight: 600; font-size: var(--text-lg); overflow-wrap: anywhere;}
.source-title a {color: var(--body-text-color);}
.source-details {color: var(--body-text-color-subdued);}
#results-table table, #results-table .body-cell {font-family: var(--font);}
#results-table .body-cell {cursor: pointer;}
#results-table .selection-button, #results-table .cell-menu-button {display: none;}
#downloads tr.file {padding-top: 0; padding-bottom: 0;}
#downloads tr.file td {padding-top: 5px; padding-bottom: 5px;}
#downloads .label-clear-button {display: none;}
#live-tail .live-tail {display: flex; gap: 8px; color: var(--body-text-color-subdued); font-style: italic;}
#live-tail .live-time {flex: 0 0 18%;}
#live-tail .live-cell {flex: 1 1 0; overflow-wrap: anywhere;}
#live-tail .live-note {color: var(--color-accent); font-weight: 600; margin-top: 4px;}
@media (max-width: 640px) {#language-row {flex-direction: column;}}
"""

# Gradio's page says "This application is currently busy. Please try again." when the queue is full; say
# how full and when to come back instead.
JS = """
() => {
  const busy = "This application is currently busy";
  const message = BUSY_MESSAGE;
  const fix = () => document.querySelectorAll(".toast-body").forEach((toast) => {
    const walker = document.createTreeWalker(toast, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (node.nodeValue.includes(busy)) node.nodeValue = message;
    }
  });
  new MutationObserver(fix).observe(document.body, {childList: true, subtree: true, characterData: true});
}
""".replace("BUSY_MESSAGE", json.dumps(BUSY))

PLAY_FROM_JS = """
(start) => {
  const audio = document.querySelector("#player audio");
  if (audio) { audio.currentTime = start; audio.play(); }
}
"""

with gr.Blocks(title="Whisper: transcribe and translate speech",
               delete_cache=(FILES_KEPT_S // 2, FILES_KEPT_S)) as demo:
    gr.Markdown(f"# Whisper: speech to text, and to English\n{INTRO}")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            with gr.Tabs():
                with gr.Tab("YouTube / URL", id="url"):
                    url_box = gr.Textbox(label="Link", placeholder="https://www.youtube.com/watch?v=…",
                                         info="A YouTube video, or any page or file with audio or video.",
                                         elem_id="url-box")
                    url_button = gr.Button("Transcribe", variant="primary", elem_id="url-button")
                with gr.Tab("Microphone", id="mic"):
                    mic_mode = gr.Radio(MIC_MODES, value="live", show_label=False, elem_id="mic-mode")
                    live_mic = gr.Audio(sources=["microphone"], streaming=True, type="filepath",
                                        label=f"Live microphone: words appear as you speak (up to "
                                        f"{show.clock(LIVE_MAX_S)})", elem_id="live-mic")
                    recording = gr.Audio(sources=["microphone"], type="filepath", label="Recording",
                                         elem_id="recording", visible=False)
                    mic_button = gr.Button("Transcribe", variant="primary", elem_id="mic-button", visible=False)
                with gr.Tab("Upload", id="upload"):
                    upload = gr.File(file_types=["audio", "video"], file_count="multiple", elem_id="upload",
                                     label=f"Audio or video files (up to {MAX_FILES} at once)")
                    upload_button = gr.Button("Transcribe", variant="primary", elem_id="upload-button")
                    examples = gr.Examples(
                        [[[str(EXAMPLES_DIR / name)]] for name, _ in EXAMPLES], inputs=[upload],
                        example_labels=[label for _, label in EXAMPLES], cache_examples=False,
                        label="Examples (click one to transcribe it)", api_visibility="private",
                    )
            with gr.Accordion("Options", open=False):
                mode = gr.Radio(MODE_CHOICES, value="both", label="Mode")
                gr.Dropdown([service.model.name], value=service.model.name, label="Model", interactive=False,
                            info="The model this server loaded (set WHISPER_MODEL to change it).")
                beam_size = gr.Slider(1, MAX_BEAM, value=DEFAULT_BEAM, step=1, label="Beam size", info=BEAM_INFO)
                fallback = gr.Checkbox(value=DEFAULT_FALLBACK, label="Retry doubtful windows by sampling",
                                       info=FALLBACK_INFO)
                batched = gr.Checkbox(value=DEFAULT_BATCHED, label="Batched decoding", info=BATCHED_INFO,
                                      elem_id="batched")
                initial_prompt = gr.Textbox(label="Initial prompt", lines=2,
                                            placeholder="Names and words to expect, or text in the style you want")
        with gr.Column(scale=3, min_width=320):
            file_picker = gr.Radio([], label="Files", visible=False, elem_id="file-picker")
            source_card = gr.HTML(HINT, elem_id="source-card")
            player = gr.Audio(label="Your audio: click a row below to play from there", type="filepath",
                              interactive=False, visible=False, elem_id="player",
                              waveform_options=gr.WaveformOptions(show_recording_waveform=False))
            with gr.Row(equal_height=True, elem_id="language-row"):
                language_line = gr.Markdown(elem_id="language-line", min_height=72)
                language = gr.Dropdown(LANGUAGE_CHOICES, value="auto", label="Spoken language",
                                       info="Wrong? Pick the right one to run again.", elem_id="language",
                                       scale=0, min_width=200)
            table = gr.Dataframe(
                value={"headers": show.build_table([], [], tasks=MODES["both"]).headers, "data": []},
                interactive=False, wrap=True, column_widths=["18%", "41%", "41%"], max_height=600,
                label="Results", show_label=False, elem_id="results-table",
            )
            live_tail = gr.HTML("", elem_id="live-tail")
            downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, visible=False,
                                elem_id="downloads")
    row_starts = gr.State([])
    last_source = gr.State(None)
    live_state = gr.State(None)  # the recording's LiveFeed, REFUSED, or None
    file_views = gr.State({})  # several files' results: what the results area showed for each
    seek_to = gr.Number(visible=False)

    settings = {language, mode, beam_size, fallback, batched, initial_prompt}  # a set: handlers get one dict
    results_area = [source_card, player, language_line, table, downloads, row_starts, last_source, live_tail,
                    file_picker, file_views]
    model_event = {"outputs": results_area, "concurrency_id": MODEL_GROUP, "concurrency_limit": CONCURRENCY,
                   "show_progress_on": [language_line], "api_visibility": "private"}
    gr.on([url_button.click, url_box.submit], run_url, {url_box, *settings}, **model_event)
    mic_button.click(run_recording, {recording, *settings}, **model_event)
    file_picker.input(show_file, [file_picker, file_views], results_area, queue=False, api_visibility="private")
    mic_mode.change(mic_mode_shown, [mic_mode], [live_mic, recording, mic_button], queue=False,
                    api_visibility="private")
    # The live events stay out of the model's group: a chunk is answered at once, whatever else runs.
    live_event = {"outputs": [*results_area, live_state], "concurrency_id": "live", "concurrency_limit": None,
                  "api_visibility": "private"}
    live_mic.start_recording(live_start, {live_state, *settings}, show_progress="hidden", **live_event)
    live_mic.stream(live_chunk, [live_mic, live_state], stream_every=LIVE_CHUNK_S, show_progress="hidden",
                    **live_event)
    live_mic.stop_recording(live_stop, {live_state, mode}, show_progress_on=[language_line], **live_event)
    upload_button.click(run_file, {upload, *settings}, **model_event)
    examples.load_input_event.then(run_file, {upload, *settings}, **model_event)
    language.input(run_again, {last_source, url_box, upload, recording, *settings}, **model_event)
    table.select(play_from, [row_starts], [seek_to], queue=False, show_progress="hidden",
                 api_visibility="private").then(None, [seek_to], None, js=PLAY_FROM_JS)

    api_event = {"concurrency_id": MODEL_GROUP, "concurrency_limit": CONCURRENCY}
    if ZERO_GPU:  # the calls waiting in the queue are handed over together and decoded in one GPU call
        batch_event = {**api_event, "batch": True, "max_batch_size": ZERO_GPU_BATCH}
        gr.api(zero_gpu_batch(transcribe_file, _file_loader), api_name="transcribe_file", **batch_event)
        gr.api(zero_gpu_batch(transcribe_url, _url_loader), api_name="transcribe_url", **batch_event)
    else:
        gr.api(transcribe_file, api_name="transcribe_file", **api_event)
        gr.api(transcribe_url, api_name="transcribe_url", **api_event)
    gr.api(status, api_name="status", queue=False)


if __name__ == "__main__":
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY).launch(
        max_file_size=LIMITS.max_bytes, allowed_paths=[str(EXAMPLES_DIR)], css=CSS, js=JS, footer_links=["api"],
    )
