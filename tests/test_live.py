"""Live transcription: real speech pushed chunk by chunk, as a microphone would send it."""

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from whisper_core.audio import SAMPLE_RATE, load_audio, log_mel_spectrogram, pad_or_trim
from whisper_core.decoding import DecodingOptions, decode
from whisper_core.live import (
    MAX_BUFFER_S,
    LiveBusy,
    LivePlaces,
    LiveSession,
    Resampler,
    _key,
    _Track,
    _until_loop,
    _Word,
    as_mono_float,
    join_lines,
    play,
    read_wav,
)
from whisper_core.metrics import error_rate
from whisper_core.options import make_options
from whisper_core.service import TranscriptionService
from whisper_core.speech_model import SpeechModel
from whisper_core.vad import SpeechMap

ROOT = Path(__file__).resolve().parents[1]
STEP_S = 1.0  # seconds pushed between steps
# Live decodes see a growing buffer, not the whole file, and commit each word once: on these sentences
# of 13 and 22 words, two words may come out unlike the offline transcript (an inflection, a comma).
WER_MARGIN = 0.2
STEREO_MARGIN = 0.05  # 48 kHz int16 stereo against 16 kHz float mono: at most one word in twenty
# Fed faster than it decodes, a word still waits only a few decodes: the first that hears it, the one
# that agrees, and more only where the model hesitates at the end of the buffer.
MAX_DECODES_BEHIND = 6
FAST_WER_MARGIN = 0.1
CUT_BUFFER_S = 10  # seconds of speech after a cut
MIN_WORDS_AFTER_CUT = 15  # of the 25-40 written there
LONG_SPEECH_S = 60.0  # of a speaker who seldom pauses, in both tasks
LONG_STEP_S = 2.0


@pytest.fixture(scope="module")
def service(model) -> TranscriptionService:
    return TranscriptionService(model)


def _stream(service, samples: np.ndarray, mode: str, *, rate: int = SAMPLE_RATE, piece: int | None = None):
    """Push `samples` STEP_S at a time (in pieces of `piece` samples), stepping after each; returns the
    session and every task's committed words after each step."""
    session = LiveSession(service, service.model.plan(mode), make_options(temperature=0.0))
    history: list[dict[str, list[dict]]] = []
    per_step = round(STEP_S * rate)
    for start in range(0, len(samples), per_step):
        block = samples[start : start + per_step]
        for at in range(0, len(block), piece or len(block)):
            session.push(block[at : at + (piece or len(block))], rate)
        update = session.step()
        history.append(_words(session, update))
    history.append(_words(session, session.finish()))
    return session, history


def _words(session: LiveSession, update) -> dict[str, list[dict]]:
    """The words committed so far per task, checked against what the update says it added."""
    words = {task: [w for line in session.segments(task) for w in line["words"]] for task in session.plan.tasks}
    for task, lines in update.committed.items():
        added = [w for line in lines for w in line["words"]]
        assert words[task][len(words[task]) - len(added) :] == added, task
    return words


@pytest.fixture(scope="module")
def jfk(service, shared):
    samples = load_audio(str(shared / "audio" / "en_jfk_ask_not.flac"))
    return samples, *_stream(service, samples, "transcribe")


@pytest.fixture(scope="module")
def consulat(service, shared):
    return _stream(service, load_audio(str(shared / "audio" / "fr_sous_le_consulat.wav")), "both")


def _resampled(resampler: Resampler, pieces: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([*(resampler(as_mono_float(p)) for p in pieces), resampler.flush()])


def test_stream_cut_anywhere_resamples_the_same():
    """Rate conversion and channel mixing do not depend on where the chunks are cut, and lose nothing."""
    rng = np.random.default_rng(0)
    stereo = (rng.standard_normal((48000, 2)) * 3000).astype(np.int16)
    whole = _resampled(Resampler(48000), [stereo])
    cuts = [0, 1, 4096, 4097, 20000, 48000]
    pieces = _resampled(Resampler(48000), [stereo[a:b] for a, b in zip(cuts, cuts[1:], strict=False)])
    assert len(whole) == len(pieces) == 16000
    assert np.allclose(whole, pieces, atol=1e-6)


def test_resampling_filters_out_what_16_khz_cannot_hold():
    """A 10 kHz tone from a 48 kHz microphone is above 16 kHz audio's 8 kHz limit: it is filtered out,
    not folded down to a 6 kHz whistle; a 1 kHz tone passes."""
    t = np.arange(48000) / 48000

    def loudness(hz: float) -> float:
        tone = _resampled(Resampler(48000), [(0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)])
        return float(np.sqrt(np.mean(tone[1000:-1000] ** 2)))
    assert loudness(1000) > 0.34 and loudness(10000) < 0.01


def test_committed_text_never_changes(jfk):
    _, _, history = jfk
    for before, after in zip(history, history[1:], strict=False):
        assert after["transcribe"][: len(before["transcribe"])] == before["transcribe"]
    assert any(h["transcribe"] for h in history[:-1])  # words are committed while the speech goes on


@pytest.mark.parametrize("name", ["en_jfk_ask_not.flac", "fr_sous_le_consulat.wav"])
def test_final_text_is_the_offline_transcript(model, shared, manifest, jfk, consulat, name):
    """Within the margin of the offline transcript, and no further than that from what was said."""
    session = jfk[1] if name.startswith("en_") else consulat[0]
    entry = next(e for e in manifest if e["file"] == name)
    language, said = entry["language"], entry["reference"]
    offline = model.transcribe(str(shared / "audio" / name), temperature=0.0)["text"]
    live = session.text("transcribe")
    assert session.language == language
    assert error_rate(offline, live, language) <= WER_MARGIN, (offline, live)
    assert error_rate(said, live, language) <= error_rate(said, offline, language) + WER_MARGIN, (said, live)


@torch.inference_mode()
def test_a_decode_given_its_own_first_words_writes_the_rest_as_it_would(model, shared):
    """What a live decode is given as written (its committed words, timestamps included) is read in one
    pass; from there it writes what it would have written anyway: cut mid-segment or after a segment's
    end, the whole text comes back token for token."""
    audio = load_audio(str(shared / "audio" / "en_ljspeech_printing_longform.ogg"))  # its first window
    mel = log_mel_spectrogram(pad_or_trim(audio), model.net.dims.n_mels)[None].to(model.net.dtype)
    features = model.net.encoder(mel)
    tok = model.tokenizer.with_task("en", "transcribe")
    whole = decode(model.net, features, DecodingOptions(language="en"), tok)[0].tokens
    ts = tok.timestamp_begin
    closing = [i + 1 for i in range(1, len(whole) - 1) if whole[i] >= ts and whole[i + 1] >= ts]
    mid_segment = [i + 1 for i in range(1, len(whole) - 1) if whole[i] < ts and whole[i + 1] < ts]
    assert closing and len(mid_segment) > 10
    for cut in [*closing, *mid_segment[::5]]:
        given = DecodingOptions(language="en", text_so_far=tuple(whole[:cut]))
        assert decode(model.net, features, given, tok)[0].tokens == whole, cut


def test_committed_words_in_the_buffer_are_given_as_their_segments(model):
    """`<|start|> words <|end|>` for each committed segment still in the buffer, the last left open, the
    times those of the speech-only audio (a pause the detector dropped is not counted); untimed, one open
    segment."""
    tok = model.tokenizer
    track = _Track()
    track.committed = [_Word(" Gone", 9.0, 9.5, 0, True), _Word(" Ask", 10.2, 10.5, 0, False),
                       _Word(" not.", 10.5, 11.0, 0, True), _Word(" And", 13.0, 13.3, 1, False),
                       _Word(" so", 13.3, 13.6, 1, False)]
    speech = SpeechMap(((0, 2 * SAMPLE_RATE), (3 * SAMPLE_RATE, 8 * SAMPLE_RATE)), 8 * SAMPLE_RATE)  # 2-3 s dropped
    so_far = track.text_so_far(10.0, speech, tok, most=100)
    ts = tok.timestamp_begin
    assert so_far == (ts + 10, *tok.encode(" Ask not."), ts + 50, ts + 100, *tok.encode(" And so"))
    assert track.text_so_far(10.0, speech, tok, most=5) == ()  # longer than asked: none
    # a translation's word times follow its words: one segment from the buffer's start, the model times the rest
    assert track.text_so_far(10.0, speech, tok, most=100, timed=False) == (ts, *tok.encode(" Ask not. And so"))


def test_a_decode_waits_for_a_second_of_new_audio(service, jfk):
    """Chunks of half a second: every other one is decoded with the one before it, not each alone."""
    samples = jfk[0]
    session = LiveSession(service, service.model.plan("transcribe"), make_options(temperature=0.0))
    half = SAMPLE_RATE // 2
    session.push(samples[: 8 * half])
    session.step()  # the language, from 4 s of speech, and a first decode
    decodes = []
    for at in range(8 * half, 14 * half, half):
        requests = service.stats.requests
        session.push(samples[at : at + half])
        session.step()
        decodes.append(service.stats.requests - requests)
    assert decodes == [0, 1, 0, 1, 0, 1]


def test_silence_and_noise_commit_nothing(service, shared):
    noise = load_audio(str(shared / "audio" / "nonspeech_steady_noise.wav"))
    for samples in (np.zeros(8 * SAMPLE_RATE, dtype=np.float32), noise):
        session, history = _stream(service, samples, "both")
        assert not any(words for h in history for words in h.values())
        assert session.text("transcribe") == "" and not session.text("translate")


def test_one_session_transcribes_and_translates(consulat):
    session, history = consulat
    assert "consulat" in session.text("transcribe").lower()
    english = session.text("translate").lower()
    assert "consul" in english or "console" in english, english
    assert history[-1]["translate"]


def test_a_translation_that_stops_early_at_the_end_is_decoded_again(service, shared):
    """At the end of the stream nothing comes after the last decode: a translation that, given its committed
    words, ends LEFT_UNSAID_S before the speech does is decoded again without them (during the stream its
    word times cannot tell; at its end, what it leaves out would be lost). The early end is made here by
    cutting the given decode's English after its first words."""
    samples = load_audio(str(shared / "audio" / "fr_sous_le_consulat.wav"))
    session = LiveSession(service, service.model.plan("both"), make_options(language="fr", temperature=0.0))
    for piece in (samples[: 4 * SAMPLE_RATE], samples[4 * SAMPLE_RATE : 5 * SAMPLE_RATE]):
        session.push(piece)
        session.step()
    assert session.text("translate"), "two decodes agreed on the first English words"
    session.push(samples[5 * SAMPLE_RATE :])
    runs = []
    decode_tasks = session._decode_tasks

    def cut_short(audio, speech, tasks, *, given, **kwargs):
        words, given_words = decode_tasks(audio, speech, tasks, given=given, **kwargs)
        runs.append((tasks, given, given_words))
        if given and "translate" in given_words:
            words["translate"] = [w for w in words["translate"] if w.end <= 2.5]
        return words, given_words

    session._decode_tasks = cut_short
    session.finish()
    assert runs[0][2] == ["transcribe", "translate"] and (["translate"], False) in [r[:2] for r in runs[1:]], runs
    late = [w["word"] for line in session.segments("translate") for w in line["words"] if w["start"] > 2.5]
    assert len(late) >= 4, session.text("translate")  # the second half of the sentence


@pytest.mark.parametrize("cut_s", [13.5, 58.5])
def test_a_buffer_cut_mid_speech_keeps_its_text_with_the_pages_options(service, shared, cut_s):
    """The page asks for the rule against text invented between silences; a live buffer starts and ends
    at cuts in the speech, which that rule took for silence: from these two cuts of the podcast, one
    task's whole decode was dropped."""
    samples = load_audio(str(shared / "audio" / "fr_smartphone_podcast.mp3"))
    options = make_options(language="fr", temperature=0.0, vad_filter=True, word_timestamps=True,
                           hallucination_silence_threshold=2.0)
    session = LiveSession(service, service.model.plan("both"), options)
    session.push(samples[round(cut_s * SAMPLE_RATE) : round((cut_s + CUT_BUFFER_S) * SAMPLE_RATE)])
    session.step()
    session.finish()
    counts = {task: len(session.text(task).split()) for task in ("transcribe", "translate")}
    assert min(counts.values()) >= MIN_WORDS_AFTER_CUT, counts


def test_both_tasks_keep_the_buffer_short_and_commit_the_translation_as_they_go(service, shared):
    """The buffer is cut where the transcript is committed, the translation committing what it heard in
    the audio dropped: waiting for the translation to agree there too had let the buffer, and each step's
    decode, grow without end on a speaker who goes on (52 s after 90 s of this podcast)."""
    samples = load_audio(str(shared / "audio" / "fr_smartphone_podcast.mp3"))[: round(LONG_SPEECH_S * SAMPLE_RATE)]
    session = LiveSession(service, service.model.plan("both"), make_options(temperature=0.0))
    per_step = round(LONG_STEP_S * SAMPLE_RATE)
    longest = 0.0
    english_by_half = None
    for start in range(0, len(samples), per_step):
        session.push(samples[start : start + per_step])
        session.step()
        longest = max(longest, session.buffered_s)
        if english_by_half is None and session.received_s >= LONG_SPEECH_S / 2:
            english_by_half = session.text("translate")
    session.finish()
    assert longest <= MAX_BUFFER_S + LONG_STEP_S, longest
    assert english_by_half and "smartphone" in english_by_half.lower(), english_by_half
    english = session.text("translate").lower()
    assert english.startswith(english_by_half.lower()) and len(english.split()) > 60, english


def test_a_translation_commits_what_it_heard_in_the_audio_dropped():
    track = _Track()
    track.tentative = [_Word(f" {w}", i, i + 0.8, 0, False) for i, w in enumerate("what makes it strong".split())]
    lines = track.settle(2.5)  # "makes" ends at 1.8, "it" is at 2.0-2.8: its middle is before the cut
    assert [w["word"] for line in lines for w in line["words"]] == [" what", " makes", " it"]
    assert [w.text for w in track.tentative] == [" strong"] and track.settle(2.5) == []


def test_a_word_written_two_ways_between_agreeing_words_is_taken_as_the_newer_decode_wrote_it():
    """LocalAgreement-2 held every word after an unsure one until two decodes wrote it alike; a word at one
    place between words both decodes agree on is one word written two ways."""
    def decode(text: str, shift: float = 0.0) -> list[_Word]:
        return [_Word(f" {w}", i * 0.4 + (shift if i == 2 else 0.0), i * 0.4 + 0.3, 0, False)
                for i, w in enumerate(text.split())]

    def committed_after(first: str, second: str, shift: float = 0.0) -> list[str]:
        track = _Track()
        track.agree(decode(first), final=False)
        track.agree(decode(second, shift), final=False)
        return [w.text.strip() for w in track.committed]

    assert committed_after("rend l enclore et qui", "rend l enfeur et qui amène") == "rend l enfeur et qui".split()
    assert committed_after("rend l enclore et qui", "rend l enfeur et que amène") == ["rend", "l"]  # one after it
    assert committed_after("rend l enclore et qui", "rend l enfeur et qui", shift=1.5) == ["rend", "l"]  # elsewhere


def test_stereo_int16_at_48k_is_heard_as_mono(service, shared, jfk):
    samples, session, _ = jfk
    at_48k = load_audio(str(shared / "audio" / "en_jfk_ask_not.flac"), sr=48000)
    stereo = np.stack([at_48k * 0.9, at_48k * 1.1], axis=1)  # two channels that average to the speech
    stereo = np.clip(stereo * 32768, -32768, 32767).astype(np.int16)
    heard, _ = _stream(service, stereo, "transcribe", rate=48000, piece=4096)
    assert error_rate(session.text("transcribe"), heard.text("transcribe"), "en") <= STEREO_MARGIN


def _live(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "whisper_core.live", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_command_prints_commits_as_they_are_heard(shared):
    proc = _live(str(shared / "audio" / "en_jfk_ask_not.flac"), "--jsonl", "--speed", "0", "--chunk_s", "2")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    commits, done = rows[:-1], rows[-1]
    assert commits and all(row["task"] == "transcribe" for row in commits)
    for row in commits:
        assert row["fed_s"] >= row["end"] - 0.5, row  # nothing is committed before it is heard
        assert row["words"] and row["text"]
    assert commits[0]["fed_s"] < 11.0  # the first words come before the file is over
    assert done["done"] is True and done["translate"] is None
    assert "ask not what your country can do for you" in done["transcribe"].lower()


def test_command_missing_file_is_one_line(tmp_path):
    proc = _live(str(tmp_path / "nothing.wav"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nothing.wav'}: no such file"]


def _played(session: LiveSession, samples: np.ndarray, speed: float) -> tuple[list[float], list[tuple[int, dict]]]:
    """Play `samples` into the session at `speed` times real time: the seconds fed when each decode ended,
    and (decode, word) for each committed word."""
    steps: list[float] = []
    commits: list[tuple[int, dict]] = []

    def report(update, fed_s: float) -> None:
        if len(steps) == session.decodes:  # this step waited for more audio
            return
        commits.extend((len(steps), w) for lines in update.committed.values() for line in lines for w in line["words"])
        steps.append(fed_s)

    play(session, samples, chunk_s=0.5, speed=speed, report=report)
    return steps, commits


def test_a_fast_speaker_waits_a_few_decodes_for_each_word(service, shared):
    """The French podcast, a second a step: every word is committed within MAX_DECODES_BEHIND decodes of
    the one that first heard it. From some committed words given as written, the model ended the window at
    once, and every decode after stopped there too until the buffer was cut (10 s without a word)."""
    samples = load_audio(str(shared / "audio" / "fr_smartphone_podcast.mp3"))[: round(LONG_SPEECH_S * SAMPLE_RATE)]
    _, history = _stream(service, samples, "transcribe")
    behind, known = [], 0
    for step, words in enumerate(history[:-1]):
        for word in words["transcribe"][known:]:
            behind.append(step - min(int(word["end"] / STEP_S), step))
        known = len(words["transcribe"])
    assert len(behind) > 100 and max(behind) <= MAX_DECODES_BEHIND, behind


def test_a_stream_fed_faster_than_it_decodes_keeps_a_bounded_lag(service, model, shared):
    """Fed at three times real time, faster than decodes keep up with here, each decode takes in all that
    arrived meanwhile: nine words in ten are committed within two decodes after the one that first heard
    them (two decodes must agree, and a word at the buffer's very end is often heard again differently),
    none more than MAX_DECODES_BEHIND, however slow the machine (a decode per chunk would leave it ever
    more chunks behind), and all the speech is still committed."""
    samples = load_audio(str(shared / "audio" / "en_ljspeech_printing_longform.ogg"))[: 60 * SAMPLE_RATE]
    session = LiveSession(service, service.model.plan("transcribe"), make_options(temperature=0.0))
    steps, commits = _played(session, samples, speed=3.0)
    assert sum(fed < 60 for fed in steps) > 3  # it fell behind: steps took in many chunks at once
    behind = []  # for each word, the decodes between the first that heard it and the one that committed it
    for step, word in commits:
        heard_by = next((i for i in range(step + 1) if (steps[i - 1] if i else 0.0) >= word["end"]), step)
        behind.append(step - heard_by)
    assert len(behind) > 100 and np.quantile(behind, 0.9) <= 2 and max(behind) <= MAX_DECODES_BEHIND, behind
    offline = model.transcribe(samples, temperature=0.0)["text"]
    assert error_rate(offline, session.text("transcribe"), "en") <= FAST_WER_MARGIN


def test_two_live_sessions_and_an_upload_on_one_model(model, shared):
    """All three come out right from the one model; on a CPU the live speakers' windows step without the
    upload's beside them (each encoder pass there costs as much as their own decode)."""
    from concurrent.futures import ThreadPoolExecutor

    service = TranscriptionService(model)
    loads = SpeechModel.loads
    upload = load_audio(str(shared / "audio" / "fr_smartphone_podcast.mp3"))[: 60 * SAMPLE_RATE]
    speakers = {name: load_audio(str(shared / "audio" / name))
                for name in ("en_jfk_ask_not.flac", "es_arenas_blanquecinas.wav")}
    sessions = {name: LiveSession(service, model.plan("both"), make_options(temperature=0.0)) for name in speakers}
    with ThreadPoolExecutor(3) as pool:
        uploaded = pool.submit(service.submit, upload, model.plan("transcribe"), make_options(temperature=0.0))
        played = [pool.submit(_played, sessions[name], samples, 2.0) for name, samples in speakers.items()]
        for future in played:
            future.result()
    alone = model.transcribe(upload, temperature=0.0)["text"]
    assert error_rate(alone, uploaded.result()["transcribe"]["text"], "fr") < 0.02
    for name, session in sessions.items():
        language = name[:2]
        offline = model.transcribe(speakers[name], temperature=0.0)["text"]
        assert session.language == language
        assert error_rate(offline, session.text("transcribe"), language) <= WER_MARGIN, name
    assert sessions["en_jfk_ask_not.flac"].text("translate") is None  # English is not translated
    assert "sand" in sessions["es_arenas_blanquecinas.wav"].text("translate").lower()
    assert SpeechModel.loads == loads
    assert service.stats.urgent_steps > 0 and service.stats.shared_urgent_steps == 0


def _streamed_wav(samples: np.ndarray, rate: int) -> bytes:
    """A PCM16 WAV as a browser's recorder streams it: lengths in the header that no file has."""
    fmt = struct.pack("<HHIIHH", 1, samples.shape[1] if samples.ndim == 2 else 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFF7) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", 0xFFFFFFD3) + samples.astype("<i2").tobytes())


def test_a_streamed_wav_chunk_is_read_to_its_end():
    mono = (np.arange(24000) % 200 - 100).astype(np.int16)
    samples, rate = read_wav(_streamed_wav(mono, 48000))
    assert rate == 48000 and np.array_equal(samples, mono)
    stereo = np.stack([mono, -mono], axis=1)
    assert np.array_equal(read_wav(_streamed_wav(stereo, 44100))[0], stereo)
    with pytest.raises(ValueError, match="not a WAV"):
        read_wav(b"ID3\x04 an mp3")


def test_live_places_are_limited_and_a_silent_visitor_gives_one_back(service):
    places = LivePlaces(service, places=1, idle_s=0.5)
    plan, options = service.model.plan("transcribe"), make_options(temperature=0.0, language="en")
    first = places.open(plan, options)
    with pytest.raises(LiveBusy):
        places.open(plan, options)
    time.sleep(1.0)  # no audio came: the visitor left without pressing Stop
    assert first.abandoned and places.in_use == 0
    second = places.open(plan, options)
    second.push(np.zeros(SAMPLE_RATE, dtype=np.float32))
    assert second.close().committed == {"transcribe": []} and places.in_use == 0


def test_committed_lines_are_joined_into_sentences_for_the_reader():
    def line(start: float, end: float, *words: str) -> dict:
        step = (end - start) / len(words)
        timed = [{"word": w, "start": start + i * step, "end": start + (i + 1) * step} for i, w in enumerate(words)]
        return {"start": start, "end": end, "text": "".join(words).strip(), "words": timed}

    lines = [line(0.0, 1.0, " Ask", " not"), line(1.1, 2.0, " what", " your", " country."),
             line(2.2, 3.0, " And", " so"), line(5.0, 6.0, " my", " fellow")]
    rows = join_lines(lines)
    assert [r["text"] for r in rows] == ["Ask not what your country.", "And so", "my fellow"]
    assert rows[0]["start"] == 0.0 and rows[0]["end"] == 2.0 and len(rows[0]["words"]) == 5
    assert join_lines([line(0.0, 1.0, "我们"), line(1.2, 2.0, "今天")])[0]["text"] == "我们今天"


def test_a_decode_that_takes_up_a_phrase_again_is_seen_repeating():
    """New words that say again four words of the committed tail, or of themselves, are a loop being taken
    up (the session then decodes that task again from the audio alone); new words that go on, or repeat
    fewer words, are not."""
    def words(text: str, at: float) -> list[_Word]:
        return [_Word(f" {w}", at + i * 0.3, at + i * 0.3 + 0.2, 0, False) for i, w in enumerate(text.split())]

    track = _Track()
    track.committed = words("so it's a very interesting picture but it's very", 0.0)
    assert track.repeats(words("interesting it's a very interesting picture", 3.0))
    assert track.repeats(words("obviously we click on the icons we click on the icons", 3.0))
    assert not track.repeats(words("interesting so obviously you have to add the interfaces", 3.0))
    assert not track.repeats(words("interesting very very often", 3.0))
    assert not _Track().repeats(words("it's a very interesting picture", 0.0))


def test_a_decode_that_takes_up_a_phrase_again_is_decoded_again_without_the_committed_text(service, jfk):
    """Committed text that the speech goes on to say again ("ask not what your", from before the buffer)
    is the prompt of the first decode; its new words repeat it, so the task is decoded once more without
    that prompt (a prompt that said "the same as the same thing" made a last decode loop), and what is
    committed is the speech as heard."""
    session = LiveSession(service, service.model.plan("transcribe"), make_options(language="en", temperature=0.0))
    session.push(np.zeros(5 * SAMPLE_RATE, dtype=np.float32))
    session.step()  # silence: the buffer is cut to its last second, what the committed words' audio was
    said = "Ask not what your"
    track = session._tracks["transcribe"]
    track.committed = [_Word(f" {w}", 1.0 + i * 0.5, 1.4 + i * 0.5, 0, i == 3) for i, w in enumerate(said.split())]
    track.lines = [{"start": 1.0, "end": 2.9, "text": said, "words": [w.as_dict() for w in track.committed]}]
    prompts = []
    decode_jobs = service.decode_jobs

    def recording_prompts(jobs, plan, **kwargs):
        prompts.append([job.options.initial_prompt for job in jobs])
        return decode_jobs(jobs, plan, **kwargs)

    service.decode_jobs = recording_prompts
    try:
        session.push(jfk[0])
        session.finish()
    finally:
        del service.decode_jobs
    assert prompts[:2] == [[said], [None]], prompts
    heard = " ".join(_key(word) for word in session.text("transcribe").split())
    assert "and so my fellow americans ask not what your country can do for you" in heard, heard


def test_a_decode_stuck_in_a_loop_keeps_the_phrase_once():
    """A phrase of two words or more written three times in a row is kept once and what follows dropped;
    a word said three times, or a phrase said twice, is speech and stays."""
    def words(text: str) -> list[_Word]:
        return [_Word(f" {w}", i * 0.3, i * 0.3 + 0.2, 0, False) for i, w in enumerate(text.split())]

    def said(kept: list[_Word]) -> str:
        return " ".join(w.text.strip() for w in kept)

    looping = words("alors je veux dire que je veux dire que je veux dire que je veux dire")
    assert said(_until_loop(looping)) == "alors je veux dire que"
    for speech in ("no no no we won't", "ask not ask not what you can do"):
        assert said(_until_loop(words(speech))) == speech
