"""Live transcription: real speech pushed chunk by chunk, as a microphone would send it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from whisper_core.audio import SAMPLE_RATE, load_audio
from whisper_core.live import LiveSession, Resampler, as_mono_float
from whisper_core.metrics import error_rate
from whisper_core.options import make_options

ROOT = Path(__file__).resolve().parents[1]
STEP_S = 1.0  # seconds pushed between steps
# Live decodes see a growing buffer, not the whole file, and commit each word once: on these sentences
# of 13 and 22 words, two words may come out unlike the offline transcript (an inflection, a comma).
WER_MARGIN = 0.2
STEREO_MARGIN = 0.05  # 48 kHz int16 stereo against 16 kHz float mono: at most one word in twenty


def _stream(model, samples: np.ndarray, mode: str, *, rate: int = SAMPLE_RATE, piece: int | None = None):
    """Push `samples` STEP_S at a time (in pieces of `piece` samples), stepping after each; returns the
    session and every task's committed words after each step."""
    session = LiveSession(model, model.plan(mode), make_options(temperature=0.0))
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
def jfk(model, shared):
    samples = load_audio(str(shared / "audio" / "en_jfk_ask_not.flac"))
    return samples, *_stream(model, samples, "transcribe")


@pytest.fixture(scope="module")
def consulat(model, shared):
    return _stream(model, load_audio(str(shared / "audio" / "fr_sous_le_consulat.wav")), "both")


def test_stream_cut_anywhere_resamples_the_same():
    """Rate conversion and channel mixing do not depend on where the chunks are cut."""
    rng = np.random.default_rng(0)
    stereo = (rng.standard_normal((48000, 2)) * 3000).astype(np.int16)
    whole = Resampler(48000)(as_mono_float(stereo))
    resampler, cuts = Resampler(48000), [0, 1, 4096, 4097, 20000, 48000]
    pieces = np.concatenate([resampler(as_mono_float(stereo[a:b])) for a, b in zip(cuts, cuts[1:], strict=False)])
    assert len(whole) == 16000 and np.array_equal(whole, pieces)
    assert np.allclose(whole[:5], stereo[::3][:5].mean(axis=1) / 32768, atol=1e-6)


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


def test_silence_and_noise_commit_nothing(model, shared):
    noise = load_audio(str(shared / "audio" / "nonspeech_steady_noise.wav"))
    for samples in (np.zeros(8 * SAMPLE_RATE, dtype=np.float32), noise):
        session, history = _stream(model, samples, "both")
        assert not any(words for h in history for words in h.values())
        assert session.text("transcribe") == "" and not session.text("translate")


def test_one_session_transcribes_and_translates(consulat):
    session, history = consulat
    assert "consulat" in session.text("transcribe").lower()
    english = session.text("translate").lower()
    assert "consul" in english or "console" in english, english
    assert history[-1]["translate"]


def test_stereo_int16_at_48k_is_heard_as_mono(model, shared, jfk):
    samples, session, _ = jfk
    at_48k = load_audio(str(shared / "audio" / "en_jfk_ask_not.flac"), sr=48000)
    stereo = np.stack([at_48k * 0.9, at_48k * 1.1], axis=1)  # two channels that average to the speech
    stereo = np.clip(stereo * 32768, -32768, 32767).astype(np.int16)
    heard, _ = _stream(model, stereo, "transcribe", rate=48000, piece=4096)
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
