"""A ZeroGPU Space's main process, for test_zero_gpu: imports app.py (model loaded, the worker thread
running), then calls the function ZeroGPU decorates in a forked child process, as ZeroGPU calls it, and
prints what came back as JSON. Usage: python zero_gpu_main.py AUDIO MODE [BATCH_SIZE]"""

from __future__ import annotations

import json
import multiprocessing
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import app  # noqa: E402
from whisper_core.audio import load_audio  # noqa: E402
from whisper_core.service import Finished, Progress  # noqa: E402


def call_in_child(audio_path: str, mode: str, batch_size: int | None) -> dict:
    """What a ZeroGPU call does: runs in the fork, with the parent's model and none of its threads."""
    request = app.make_request("auto", mode, 1, False, "", batched=bool(batch_size))
    events = list(app.decode_here(load_audio(audio_path), request.plan, request.options))
    return {
        "threads": [t.name for t in threading.enumerate()],
        "progress": [(e.task, len(e.segments), e.fraction) for e in events if isinstance(e, Progress)],
        "results": next(e.results for e in events if isinstance(e, Finished)),
        "seconds": {f"{minutes} min, {mode}": app.gpu_seconds(np.zeros(int(16000 * 60 * minutes), np.float32),
                                                               app.make_request("auto", mode, 1, False, "").plan,
                                                               request.options)
                    for minutes in (0.1, 1, 60) for mode in ("transcribe", "both")},
    }


if __name__ == "__main__":
    audio_path, mode = sys.argv[1], sys.argv[2]
    batch_size = int(sys.argv[3]) if len(sys.argv) > 3 else None
    parent_threads = [t.name for t in threading.enumerate()]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply(call_in_child, (audio_path, mode, batch_size))
    print(json.dumps({"parent_threads": parent_threads, **child}))
