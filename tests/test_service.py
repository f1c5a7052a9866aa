"""The shared service on real speech: a request streams its progress and then its results, a visitor who
leaves frees the batches, the plan decides what runs, and several requests stepped by the calling thread (a
ZeroGPU call) share steps as the worker's do."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch

from whisper_core import transcribe as longform
from whisper_core.audio import load_audio
from whisper_core.metrics import error_rate
from whisper_core.options import make_options
from whisper_core.service import Finished, Progress, TranscriptionService

GREEDY = make_options(temperature=0.0)
BROKEN = "a prompt this test's engine fails on"


@pytest.fixture(scope="module")
def service(model) -> TranscriptionService:
    return TranscriptionService(model)


def _wait(condition, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_request_streams_its_windows_then_the_results(service, model, shared, manifest):
    entry = next(e for e in manifest if e["file"] == "fr_sous_le_consulat.wav")
    audio = load_audio(str(shared / "audio" / entry["file"]))
    events = list(service.stream(audio, model.plan("both"), GREEDY))
    assert isinstance(events[-1], Finished) and all(isinstance(e, Progress) for e in events[:-1])
    results = events[-1].results
    streamed = {task: [s for e in events[:-1] if e.task == task for s in e.segments] for task in ("transcribe",
                                                                                                  "translate")}
    assert streamed["transcribe"] == results["transcribe"]["segments"]
    assert streamed["translate"] == results["translate"]["segments"]
    assert [e.fraction for e in events[:-1] if e.task == "transcribe"][-1] == 1.0
    assert error_rate(entry["reference"], results["transcribe"]["text"], "fr") < 0.2
    alone = model.transcribe(audio, temperature=0.0)
    assert results["transcribe"]["text"] == alone["text"] and results["transcribe"]["language"] == "fr"
    assert [(s["start"], s["end"]) for s in results["transcribe"]["segments"]] == [
        (s["start"], s["end"]) for s in alone["segments"]]


def test_english_speech_is_not_translated_twice_unless_translation_alone_was_asked(service, model, shared):
    audio = load_audio(str(shared / "audio" / "en_jfk_ask_not.flac"))
    both = service.submit(audio, model.plan("both"), GREEDY)
    assert both["translate"] is None and "country" in both["transcribe"]["text"]
    alone = service.submit(audio, model.plan("translate"), GREEDY)
    assert alone["transcribe"] is None and "country" in alone["translate"]["text"]


def test_a_closed_stream_leaves_the_batches_and_others_go_on(service, model, shared):
    long_audio = load_audio(str(shared / "audio" / "en_ljspeech_printing_longform.ogg"))
    cancelled_before = service.stats.cancelled
    stream = service.stream(long_audio, model.plan("both"), GREEDY)
    first = next(stream)
    assert isinstance(first, Progress) and first.fraction < 0.5
    stream.close()  # what Gradio does when the visitor leaves
    assert _wait(lambda: service.stats.cancelled == cancelled_before + 1)
    windows = service.stats.windows
    time.sleep(2.0)
    assert service.stats.windows == windows  # nothing more decoded for it
    short = load_audio(str(shared / "audio" / "en_jfk_ask_not.flac"))
    assert "country" in service.submit(short, model.plan("transcribe"), GREEDY)["transcribe"]["text"]


def test_a_batched_request_and_a_sequential_one_share_the_service(service, model, shared):
    """Each gets what it would get alone (to the rounding of other batch shapes), while their windows step
    through the same batches."""
    from concurrent.futures import ThreadPoolExecutor

    long_audio = load_audio(str(shared / "audio" / "fr_smartphone_podcast.mp3"))[: 16000 * 90]
    short = load_audio(str(shared / "audio" / "fr_sous_le_consulat.wav"))
    batched = make_options(temperature=0.0, batch_size=4)
    largest_before = service.stats.largest_step
    service.stats.largest_step = 0
    with ThreadPoolExecutor(2) as pool:
        chunked = pool.submit(lambda: list(service.stream(long_audio, model.plan("both"), batched)))
        plain = pool.submit(service.submit, short, model.plan("transcribe"), GREEDY)
        events, sequential = chunked.result(), plain.result()
    results = events[-1].results
    alone = model.transcribe_and_translate(long_audio, temperature=0.0, batch_size=4)
    for task in ("transcribe", "translate"):
        assert error_rate(alone[task]["text"], results[task]["text"], "fr" if task == "transcribe" else "en") < 0.02
        streamed = [s for e in events[:-1] if e.task == task for s in e.segments]
        assert [s["start"] for s in streamed] == [s["start"] for s in results[task]["segments"]]
        assert [s["start"] for s in streamed] == sorted(s["start"] for s in streamed)
    alone_short = model.transcribe(short, temperature=0.0)["text"]
    assert error_rate(alone_short, sequential["transcribe"]["text"], "fr") < 0.02
    assert service.stats.largest_step > 1  # the chunks stepped together
    service.stats.largest_step = max(largest_before, service.stats.largest_step)


@pytest.fixture
def one_thread_restored():
    """`submit_here` sets torch to one thread, as a forked ZeroGPU child needs; the tests after this one
    get their threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_requests_stepped_here_share_steps_and_each_gets_its_own_results(service, model, shared, manifest,
                                                                         one_thread_restored):
    names = ("en_librispeech_1272-128104-0000.wav", "fr_sous_le_consulat.wav")  # one window each
    entries = [next(e for e in manifest if e["file"] == name) for name in names]
    items = [(load_audio(str(shared / "audio" / e["file"])), model.plan("transcribe"), GREEDY) for e in entries]
    before = dataclasses.replace(service.stats)
    outcomes = service.submit_here(items)
    for entry, outcome in zip(entries, outcomes, strict=True):
        assert outcome["translate"] is None and outcome["transcribe"]["language"] == entry["language"]
        assert error_rate(entry["reference"], outcome["transcribe"]["text"], entry["language"]) < 0.2
    assert service.stats.requests == before.requests + 2
    # A transcript alone steps one window at a time: the two windows went through one step together.
    assert (service.stats.steps, service.stats.windows) == (before.steps + 1, before.windows + 2)
    assert service.stats.largest_step >= 2


def test_a_fault_in_one_request_stepped_here_leaves_the_others_their_results(service, model, shared, monkeypatch,
                                                                             one_thread_restored):
    def step_pausing(net, jobs):  # a shared step, and (through `longform.step`) each request's retry alone
        if any(job.options.initial_prompt == BROKEN for job in jobs):
            raise RuntimeError("the device fell over")
        return real_step_pausing(net, jobs)

    real_step_pausing = longform.step_pausing
    monkeypatch.setattr(longform, "step_pausing", step_pausing)
    plan = model.plan("transcribe")
    jfk = load_audio(str(shared / "audio" / "en_jfk_ask_not.flac"))
    items = [(np.zeros((2, 2, 2), np.float32), plan, GREEDY),  # not audio the engine can take
             (jfk, plan, make_options(temperature=0.0, initial_prompt=BROKEN)),  # fails the shared step
             (jfk, plan, GREEDY)]
    cannot_prepare, fails_a_step, fine = service.submit_here(items)
    assert isinstance(cannot_prepare, RuntimeError) and "expand" in str(cannot_prepare)
    assert isinstance(fails_a_step, RuntimeError) and str(fails_a_step) == "the device fell over"
    assert "ask not what your country can do for you" in fine["transcribe"]["text"].lower()


def test_a_live_speaker_who_asks_during_a_long_step_is_answered_before_it_ends(model, shared, monkeypatch):
    """A batched upload's step of eight chunks takes seconds on a CPU; a live decode that arrives while
    the step is under way is stepped at its next pause, not after it, and both get their text."""
    service = TranscriptionService(model)
    upload = load_audio(str(shared / "audio" / "en_ljspeech_printing_longform.ogg"))
    speaker = load_audio(str(shared / "audio" / "fr_sous_le_consulat.wav"))
    step_started = threading.Event()
    passes = longform.encoder_passes

    def noticed(encoder, mel):
        if mel.shape[0] > 1:  # the upload's step (the speaker's decode has one window)
            step_started.set()
        return passes(encoder, mel)

    monkeypatch.setattr(longform, "encoder_passes", noticed)
    plan = model.plan("transcribe")
    events: list[tuple[str, object]] = []

    def follow_upload() -> None:
        for event in service.stream(upload, plan, dataclasses.replace(GREEDY, batch_size=8)):
            events.append(("upload", event))

    uploading = threading.Thread(target=follow_upload)
    uploading.start()
    assert step_started.wait(120)
    live_jobs = model.jobs(model.prepare(speaker), plan, dataclasses.replace(GREEDY, language="fr"))
    live = service.decode_jobs(live_jobs, plan, urgent=True)
    events.append(("live", live))
    uploading.join(300)
    order = [who for who, _ in events]
    assert order.index("live") < order.index("upload"), "the speaker waited for the upload's step"
    assert "consulat" in live["transcribe"]["text"].lower()
    finished = events[-1][1]
    assert isinstance(finished, Finished)
    assert finished.results["transcribe"]["text"].lower().lstrip().startswith("printing, in the only sense")
