"""Real inference on speech made here with espeak-ng, so that a clone without ../shared still checks
the whole engine end to end."""

import shutil
import subprocess

import pytest

from whisper_core.audio import load_audio
from whisper_core.metrics import error_rate

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("tts") / "fox.wav"
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(path), SENTENCE], check=True)
    return path


def test_synthesized_english_is_transcribed(model, spoken):
    result = model.transcribe(str(spoken), temperature=0.0)
    assert result["language"] == "en"
    assert error_rate(SENTENCE, result["text"], "en") <= 0.25, result["text"]


def test_both_tasks_on_an_array(model, spoken):
    audio = load_audio(str(spoken))
    both = model.transcribe_and_translate(audio, temperature=0.0, language="English")
    assert both["transcribe"]["language"] == both["translate"]["language"] == "en"
    assert error_rate(SENTENCE, both["translate"]["text"], "en") <= 0.25


def test_silence_gives_no_words(model):
    import numpy as np

    result = model.transcribe(np.zeros(16000 * 3, dtype=np.float32), temperature=0.0)
    assert result["text"].strip() == "" or result["segments"][0]["no_speech_prob"] > 0.5
