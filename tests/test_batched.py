"""Batched long-form on real speech: the speech cut at its pauses into chunks of at most 30 s, decoded
many at once, agrees with sequential decoding, keeps time order and the input's times."""

from __future__ import annotations

import pytest

from whisper_core.audio import N_SAMPLES, SAMPLE_RATE, load_audio
from whisper_core.chunks import speech_chunks
from whisper_core.metrics import error_rate

WER_MARGIN = 0.02  # batched may read a little worse than sequential on one file, not more
LONG_FILES = ["en_ljspeech_printing_longform.ogg", "fr_smartphone_podcast.mp3"]


@pytest.fixture(scope="module")
def decoded(model, shared, manifest) -> dict[str, dict]:
    entries = {e["file"]: e for e in manifest}
    out = {}
    for name in LONG_FILES:
        audio = load_audio(str(shared / "audio" / name))
        out[name] = {
            "entry": entries[name],
            "chunks": speech_chunks(audio),
            "sequential": model.transcribe(audio, temperature=0.0, word_timestamps=True),
            "batched": model.transcribe(audio, temperature=0.0, word_timestamps=True, batch_size=4),
            "duration": len(audio) / SAMPLE_RATE,
        }
    return out


@pytest.mark.parametrize("name", LONG_FILES)
def test_batched_reads_as_well_as_sequential(decoded, name):
    run = decoded[name]
    language = run["entry"]["language"]
    sequential = error_rate(run["entry"]["reference"], run["sequential"]["text"], language)
    batched = error_rate(run["entry"]["reference"], run["batched"]["text"], language)
    assert batched <= sequential + WER_MARGIN, (batched, sequential)
    assert run["batched"]["language"] == language


@pytest.mark.parametrize("name", LONG_FILES)
def test_chunks_fit_a_window_and_end_in_pauses(decoded, name):
    chunks = decoded[name]["chunks"]
    assert len(chunks) >= decoded[name]["duration"] / 30
    assert all(0 < end - start <= N_SAMPLES for start, end in chunks)
    assert all(a[1] <= b[0] for a, b in zip(chunks, chunks[1:], strict=False))
    # Where one chunk ends and the next begins, sequential decoding heard no word (within the precision
    # of word times): no word is cut in two.
    cuts = [end / SAMPLE_RATE for end, _ in zip((c[1] for c in chunks), chunks[1:], strict=False)]
    words = [w for s in decoded[name]["sequential"]["segments"] for w in s["words"]]
    for cut in cuts:
        inside = [w for w in words if w["start"] < cut < w["end"]]
        assert all(min(cut - w["start"], w["end"] - cut) < 0.3 for w in inside), (cut, inside)


@pytest.mark.parametrize("name", LONG_FILES)
def test_rows_in_time_order_with_the_inputs_times(decoded, name):
    batched = decoded[name]["batched"]
    segments = batched["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts) and all(s["start"] <= s["end"] for s in segments)
    words = [w for s in segments for w in s["words"]]
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:], strict=False))
    assert segments[-1]["end"] > decoded[name]["duration"] - 15  # the end of the file is there, in its time


def test_progress_comes_in_time_order_while_batches_finish_in_any(model, shared):
    audio = load_audio(str(shared / "audio" / "fr_smartphone_podcast.mp3"))[: 100 * SAMPLE_RATE]
    seen: list[tuple[str, float, float]] = []
    result = model.transcribe_and_translate(audio, temperature=0.0, batch_size=3,
                                            progress=lambda task, new, f: seen.extend((task, s["start"], f)
                                                                                      for s in new))
    for task in ("transcribe", "translate"):
        starts = [start for t, start, _ in seen if t == task]
        assert starts == sorted(starts) and starts == [s["start"] for s in result[task]["segments"]]
    assert "smartphone" in result["transcribe"]["text"].lower()


def test_silence_gives_no_chunks_and_no_text(model, shared):
    audio = load_audio(str(shared / "audio" / "nonspeech_steady_noise.wav"))
    assert model.transcribe(audio, temperature=0.0, batch_size=8)["text"].strip() == ""


def test_language_per_chunk_follows_a_talk_that_switches_language(model, shared):
    import numpy as np

    english = load_audio(str(shared / "audio" / "en_ljspeech_printing_longform.ogg"))[: 40 * SAMPLE_RATE]
    french = load_audio(str(shared / "audio" / "fr_smartphone_podcast.mp3"))[: 40 * SAMPLE_RATE]
    talk = np.concatenate([english, np.zeros(SAMPLE_RATE, dtype=np.float32), french])
    switched = model.transcribe_and_translate(talk, temperature=0.0, batch_size=4, language_per_chunk=True)
    segments = switched["transcribe"]["segments"]
    assert {s["language"] for s in segments if s["end"] < 30} == {"en"}
    assert {s["language"] for s in segments if s["start"] > 50} == {"fr"}
    assert "smartphone" in " ".join(s["text"] for s in segments if s["start"] > 41).lower()
    # The translation holds the English part as it was said and the French part in English.
    translated = switched["translate"]["segments"]
    assert {s["language"] for s in translated if s["end"] < 30} == {"en"}
    assert any(s["start"] > 50 and s["language"] == "fr" for s in translated)
    assert "printing" in switched["translate"]["text"].lower()
    one = model.transcribe(talk, temperature=0.0, batch_size=4)
    assert one["language"] == "en" and all("language" not in s for s in one["segments"])
