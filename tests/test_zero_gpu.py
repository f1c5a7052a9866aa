"""ZeroGPU runs each call of the decorated function in a forked child process: the child has the model but
not the service's worker thread, so the call must step its request itself and hand back plain values. There
the API's waiting calls come to the endpoint as one Gradio batch and share one such call."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from whisper_core.metrics import error_rate

HERE = Path(__file__).resolve().parent


def _zero_gpu_main(*arguments: str, **settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SPACES_ZERO_GPU"}
    env |= {"GRADIO_ANALYTICS_ENABLED": "False", **settings}
    done = subprocess.run([sys.executable, str(HERE / "zero_gpu_main.py"), *arguments], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _zero_gpu_call(audio: Path, mode: str, batch_size: int | None = None) -> dict:
    # Without SPACES_ZERO_GPU, app.py leaves `decode_here` undecorated: the child calls it as ZeroGPU's
    # wrapper would, after the fork.
    return _zero_gpu_main(str(audio), mode, *([str(batch_size)] if batch_size else []))


@pytest.mark.parametrize("batch_size", [None, 8])
def test_the_decorated_call_decodes_in_a_forked_child_without_the_worker(shared, manifest, batch_size):
    entry = next(e for e in manifest if e["file"] == "fr_sous_le_consulat.wav")
    out = _zero_gpu_call(shared / "audio" / entry["file"], "both", batch_size)
    assert "whisper-worker" in out["parent_threads"] and "whisper-worker" not in out["threads"]
    results = out["results"]
    assert results["transcribe"]["language"] == "fr"
    assert error_rate(entry["reference"], results["transcribe"]["text"], "fr") < 0.2
    assert "consul" in results["translate"]["text"].lower() or "console" in results["translate"]["text"].lower()
    assert [fraction for task, _, fraction in out["progress"] if task == "transcribe"][-1] == 1.0
    seconds = out["seconds"]  # the GPU time asked grows with the audio and the tasks, within the cap
    assert 15 <= seconds["0.1 min, transcribe"] < seconds["1 min, transcribe"] < seconds["1 min, both"]
    assert seconds["60 min, both"] == 120


def test_waiting_api_calls_share_one_gpu_call_and_a_bad_input_fails_alone(shared, manifest, tmp_path):
    names = ("en_librispeech_1272-128104-0000.wav", "fr_sous_le_consulat.wav")  # one window each
    entries = [next(e for e in manifest if e["file"] == name) for name in names]
    notes = tmp_path / "notes.mp3"
    notes.write_text("These are meeting notes, not audio.")
    paths = [str(shared / "audio" / e["file"]) for e in entries] + [str(notes)]
    out = _zero_gpu_main("--batch", "transcribe", *paths, SPACES_ZERO_GPU="1", WHISPER_ZERO_GPU_BATCH="3")
    assert out["zero_gpu"] and out["batch"] and out["max_batch_size"] == 3
    *answers, unreadable = out["answers"]
    for entry, answer in zip(entries, answers, strict=True):
        assert answer["language"] == entry["language"] and answer["translate"] is None
        assert error_rate(entry["reference"], answer["transcribe"]["text"], entry["language"]) < 0.2
        assert answer["source"]["title"] == Path(entry["file"]).stem
    assert unreadable == {"error": "This file is not audio or video that can be read. Upload an audio or video "
                                   "file, for example MP3, M4A, WAV, FLAC, OGG, WebM or MP4."}
    call, = out["gpu_calls"]  # the two that loaded, in one call asking for their audio's time together
    assert call["seconds"] == math.ceil(15 + 6 * sum(e["duration_s"] for e in entries) / 60)
    assert "whisper-worker" in out["parent_threads"] and "whisper-worker" not in call["threads"]
    # A transcript alone steps one window at a time: a step of two held both users' windows.
    assert call["stats"]["requests"] == 2 and call["stats"]["largest_step"] >= 2, call["stats"]
