"""ZeroGPU runs each call of the decorated function in a forked child process: the child has the model but
not the service's worker thread, so the call must step its request itself and hand back plain values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from whisper_core.metrics import error_rate

HERE = Path(__file__).resolve().parent


def _zero_gpu_call(audio: Path, mode: str, batch_size: int | None = None) -> dict:
    command = [sys.executable, str(HERE / "zero_gpu_main.py"), str(audio), mode]
    command += [str(batch_size)] if batch_size else []
    # Without the `spaces` package or SPACES_ZERO_GPU, app.py leaves `decode_here` undecorated: the
    # child calls it as ZeroGPU's wrapper would, after the fork.
    env = {k: v for k, v in os.environ.items() if k != "SPACES_ZERO_GPU"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**env, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


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
