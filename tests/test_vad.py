"""No invented text where nobody speaks: the voice detector, and the rule for short unsure scraps."""

import numpy as np
import pytest

from whisper_core.audio import SAMPLE_RATE
from whisper_core.metrics import error_rate
from whisper_core.vad import SpeechMap, keep_speech

GREEDY = {"temperature": 0.0}
DEFAULT = {"beam_size": 5, "best_of": 5}


def test_speech_map_times_back_to_the_original():
    speech = SpeechMap(((16000, 32000), (80000, 96000)), original_samples=160000)
    assert speech.to_original(0.0) == 1.0
    assert speech.to_original(0.5) == 1.5
    assert speech.to_original(1.0) == 5.0  # the second stretch starts where the first ended
    assert speech.to_original(1.5) == 5.5
    assert speech.to_original(9.0) == 6.0  # past the speech: its end, never past the input
    audio = np.arange(160000, dtype=np.float32)
    kept = keep_speech(audio, speech)
    assert len(kept) == 32000 and kept[16000] == 80000
    assert len(keep_speech(audio, SpeechMap((), 160000))) == 0


def test_a_time_is_held_in_the_stretch_it_is_given():
    speech = SpeechMap(((16000, 32000), (80000, 96000)), original_samples=160000)
    assert speech.stretch_at(0.9) == 0 and speech.stretch_at(1.0) == 1 and speech.stretch_at(9.0) == 1
    assert speech.to_original(0.9, 1) == 5.0  # a word begun just before the join: not at 1.9 s
    assert speech.to_original(1.1, 0) == 2.0  # one ended just after it: not at 5.1 s
    assert speech.to_original(0.2, 0) == 1.2


@pytest.mark.parametrize("settings", [GREEDY, DEFAULT], ids=["greedy", "default"])
@pytest.mark.parametrize("name", ["nonspeech_empty.mp3", "nonspeech_laughter.mp3", "nonspeech_steady_noise.wav"])
def test_no_text_without_speech(model, shared, name, settings):
    both = model.transcribe_and_translate(str(shared / "audio" / name), vad_filter=True, **settings)
    assert both["transcribe"]["text"].strip() == ""
    assert both["translate"]["text"].strip() == ""


@pytest.mark.parametrize("settings", [GREEDY, DEFAULT], ids=["greedy", "default"])
def test_speech_around_a_long_silence(model, shared, settings):
    """Speech at 0-4 s and 31-36.5 s: text for both, none in the silence, none past the end."""
    both = model.transcribe_and_translate(str(shared / "audio" / "fr_bonjour_long_silence.mp3"), vad_filter=True,
                                          **settings)
    for task in ("transcribe", "translate"):
        spoken = [s for s in both[task]["segments"] if s["text"].strip()]
        assert any(s["start"] < 4.5 for s in spoken), task
        assert any(s["end"] > 31 for s in spoken), task
        for s in spoken:
            assert not (s["start"] > 5.0 and s["end"] < 31.0), f"{task}: text inside the silence: {s}"
            assert s["end"] <= 36.6, f"{task}: text past the end: {s}"


@pytest.mark.parametrize("settings", [GREEDY, DEFAULT], ids=["greedy", "default"])
def test_no_word_is_timed_across_a_long_silence(model, shared, settings):
    """With the 29-s pause cut out, the alignment starts the second phrase's first word a little before the
    join: that start once came back at the end of the first phrase, a word 29 s long (on the page, a
    highlighted word and a subtitle over the silence)."""
    result = model.transcribe(str(shared / "audio" / "fr_bonjour_long_silence.mp3"), vad_filter=True,
                              word_timestamps=True, **settings)
    words = [w for s in result["segments"] for w in s["words"]]
    assert any(w["end"] < 4.5 for w in words) and any(w["start"] > 31 for w in words), words
    for word in words:
        assert word["end"] <= 5.0 or word["start"] >= 31.0, f"a word in the silence: {word}"
    for segment in result["segments"]:  # its edges in its first and last words' stretches of speech
        assert segment["start"] <= 5.0 or segment["start"] >= 31.0, segment
        assert segment["end"] <= 5.0 or segment["end"] >= 31.0, segment


def test_detector_costs_no_accuracy(model, shared, manifest):
    """On the speech files, WER/CER against the human references is no worse with the detector (within
    half a point overall), and no file loses more than a few words."""
    errors_off, errors_on = [], []
    for entry in manifest:
        if entry["language"] is None or entry["reference_kind"] != "human" or entry["duration_s"] > 60:
            continue
        path = str(shared / "audio" / entry["file"])
        off = model.transcribe(path, **GREEDY)["text"]
        on = model.transcribe(path, vad_filter=True, **GREEDY)["text"]
        errors_off.append(error_rate(entry["reference"], off, entry["language"]))
        errors_on.append(error_rate(entry["reference"], on, entry["language"]))
        assert errors_on[-1] <= errors_off[-1] + 0.15, f"{entry['file']}: {off!r} -> {on!r}"
    assert np.mean(errors_on) <= np.mean(errors_off) + 0.005, (errors_off, errors_on)


def test_silence_array_gives_nothing(model):
    result = model.transcribe(np.zeros(SAMPLE_RATE * 5, dtype=np.float32), vad_filter=True)
    assert result == {**result, "text": "", "segments": [], "language": None}


def test_invented_text_is_recognised_by_its_words():
    from whisper_core.inventions import looks_invented as _looks_invented

    def segment(*words):
        return {"words": [{"word": w, "start": s, "end": e, "probability": p} for w, s, e, p in words]}

    spoken = segment((" Bonjour", 0.0, 0.5, 0.9), (" à", 0.5, 0.7, 0.8), (" tous.", 0.7, 1.1, 0.95))
    invented = segment((" Thanks", 10.0, 10.02, 0.1), (" for", 10.02, 10.04, 0.1), (" watching!", 10.04, 13.5, 0.1))
    assert not _looks_invented(spoken)
    assert _looks_invented(invented)
    assert not _looks_invented(None) and not _looks_invented({"words": []})


def test_hallucination_threshold_keeps_real_speech(model, shared):
    result = model.transcribe(str(shared / "audio" / "fr_bonjour_long_silence.mp3"), temperature=0.0,
                              word_timestamps=True, hallucination_silence_threshold=2.0, vad_filter=True)
    spoken = [s for s in result["segments"] if s["text"].strip()]
    assert spoken and all(not (s["start"] > 5.0 and s["end"] < 31.0) for s in spoken)


def test_the_invention_rule_leaves_a_translation_whole(model, shared):
    """The rule reads word times, and a translation's are a guess: on the Japanese clip, with the page's
    options, it kept 8 of the 98 words of the English. It judges transcripts only."""
    path = str(shared / "audio" / "ja_google_news_explainer.mp3")
    options = {"task": "translate", "temperature": 0.0, "vad_filter": True, "word_timestamps": True}
    ruled = model.transcribe(path, hallucination_silence_threshold=2.0, **options)["text"]
    plain = model.transcribe(path, **options)["text"]
    assert len(plain.split()) > 50, plain
    assert ruled == plain


def test_the_detector_leaves_torch_its_threads():
    """silero_vad sets torch to one thread when first imported; every decode after a detection would then
    run on one core. A fresh process, so that the first import is this one."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import numpy, torch; torch.set_num_threads(2); from whisper_core.vad import find_speech; "
              "find_speech(numpy.zeros(16000, dtype=numpy.float32)); print(torch.get_num_threads())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "2"


@pytest.mark.parametrize("name", ["en_ljspeech_printing_longform.ogg", "en_apollo11_air_to_ground.mp3",
                                  "nonspeech_laughter.mp3"])
def test_the_sequence_model_finds_the_stretches_the_streaming_model_finds(shared, name):
    """The detector runs silero's sequence model in ONNX Runtime; silero's streaming TorchScript model,
    frame by frame, finds the same stretches with the settings both the detector and the chunker use."""
    import silero_vad
    import torch

    from whisper_core.audio import load_audio
    from whisper_core.chunks import CHUNK_MIN_SILENCE_MS, MAX_STRETCH_S
    from whisper_core.vad import MIN_SILENCE_MS, MIN_SPEECH_MS, SPEECH_PAD_MS, THRESHOLD, find_speech

    audio = load_audio(str(shared / "audio" / name))
    threads = torch.get_num_threads()
    streaming = silero_vad.load_silero_vad()
    torch.set_num_threads(threads)
    for silence_ms, longest in ((MIN_SILENCE_MS, float("inf")), (CHUNK_MIN_SILENCE_MS, MAX_STRETCH_S)):
        found = silero_vad.get_speech_timestamps(
            torch.from_numpy(audio), streaming, threshold=THRESHOLD, sampling_rate=SAMPLE_RATE,
            min_speech_duration_ms=MIN_SPEECH_MS, min_silence_duration_ms=silence_ms,
            max_speech_duration_s=longest, speech_pad_ms=SPEECH_PAD_MS)
        spans = find_speech(audio, min_silence_ms=silence_ms, max_speech_s=longest).spans
        assert spans == tuple((s["start"], s["end"]) for s in found)
