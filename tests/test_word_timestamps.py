"""Word timing against the reference implementation's, and the pieces it is built from."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from whisper_core import timing
from whisper_core.timing import WordTiming, dtw, median_filter, merge_punctuations

REFERENCE = Path(__file__).parent / "data" / "word_timings_reference.json"


def _words(result: dict) -> list[tuple[float, float]]:
    return [(w["start"], w["end"]) for s in result["segments"] for w in s.get("words", [])]


@pytest.mark.parametrize("name", sorted(json.loads(REFERENCE.read_text())))
def test_word_times_match_the_reference(model, shared, name):
    """openai-whisper's greedy run with word_timestamps=True on the same weights (its times kept in
    tests/data): 95 % of the words start and end within 0.1 s of the reference's."""
    reference = [tuple(w) for seg in json.loads(REFERENCE.read_text())[name]["segments"] for w in seg]
    result = model.transcribe(str(shared / "audio" / name), temperature=0.0, word_timestamps=True)
    ours = _words(result)
    assert len(ours) == len(reference), f"{len(ours)} words, reference {len(reference)}"
    close = [abs(a[0] - b[0]) <= 0.1 and abs(a[1] - b[1]) <= 0.1 for a, b in zip(ours, reference, strict=True)]
    assert np.mean(close) >= 0.95 if close else True
    for segment in result["segments"]:
        for word in segment["words"]:
            assert word["start"] <= word["end"]
            assert 0.0 <= word["probability"] <= 1.0


def test_both_tasks_carry_words_and_translation_marks_them_approximate(model, shared):
    both = model.transcribe_and_translate(str(shared / "audio" / "fr_sous_le_consulat.wav"), temperature=0.0,
                                          word_timestamps=True)
    assert _words(both["transcribe"]) and _words(both["translate"])
    assert all("approximate" not in w for s in both["transcribe"]["segments"] for w in s["words"])
    assert all(w["approximate"] for s in both["translate"]["segments"] for w in s["words"])


def test_dtw_follows_the_cheap_diagonal():
    cost = np.ones((3, 6))
    for i, j in [(0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5)]:
        cost[i, j] = 0.0
    tokens, frames = dtw(cost)
    assert list(frames) == [0, 1, 2, 3, 4, 5]
    assert list(tokens) == [0, 0, 1, 1, 2, 2]


def test_median_filter_removes_a_spike():
    x = torch.tensor([[0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0]])
    assert median_filter(x, 3).abs().sum() == 0
    assert median_filter(torch.tensor([[1.0, 2.0]]), 7).tolist() == [[1.0, 2.0]]  # too short: unchanged


def test_punctuation_joins_its_word():
    words = [WordTiming(w, [i], 0, 1, 1) for i, w in enumerate([" (", "Hello", ",", " world", "!", ")"])]
    merge_punctuations(words, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
    assert [w.word for w in words if w.word] == [" (Hello,", " world!)"]


@pytest.mark.parametrize("batch_size", [None, 8])
def test_word_timing_reads_the_decodes_projection_of_the_window(model, shared, monkeypatch, batch_size):
    """The decoder's keys and values of a window are made once, by its decode, and read by the word timing
    of each of its texts: the same words and times, to the last digit, as when each text's timing
    projects the window again, with one projection fewer for every window's text timed."""
    decoder = type(model.net.decoder)
    project = decoder.project_audio
    made: list[int] = []

    def counted(self, audio_features):
        made.append(audio_features.shape[0])
        return project(self, audio_features)

    monkeypatch.setattr(decoder, "project_audio", counted)
    path = str(shared / "audio" / "ja_google_news_explainer.mp3")  # 40 s: two windows, or chunks

    def run() -> dict:
        return model.transcribe_and_translate(path, temperature=0.0, word_timestamps=True, batch_size=batch_size)

    once = run()
    made_once, made[:] = sum(made), []
    find_alignment = timing.find_alignment
    timed: list[int] = []

    def projecting_again(*args):  # as before the decode's projection was handed on
        timed.append(len(args[2]))
        return find_alignment(*args[:-1], None)

    monkeypatch.setattr(timing, "find_alignment", projecting_again)
    again = run()
    assert once == again
    texts_timed = sum(1 for n in timed if n)
    assert texts_timed >= 4
    assert sum(made) - made_once == texts_timed
