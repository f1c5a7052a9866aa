"""A ZeroGPU Space's main process, for test_zero_gpu: imports app.py (model loaded), then calls what ZeroGPU
decorates in a forked child process, as ZeroGPU calls it, and prints what came back as JSON.

Usage: python zero_gpu_main.py AUDIO MODE [BATCH_SIZE]: `decode_here` called in a fork (SPACES_ZERO_GPU
unset: the worker thread runs in this process, as it does before ZeroGPU forks).
python zero_gpu_main.py --batch MODE FILE...: with SPACES_ZERO_GPU=1, the /transcribe_file endpoint as
Gradio's queue calls it with that many waiting calls; the `spaces` package is faked here, its GPU calls
forked as ZeroGPU forks them."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import multiprocessing
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

GPU_CALLS: list[dict] = []  # each faked ZeroGPU call: the seconds it asked for, what its child saw


def gpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)`: each call runs in a forked child, its arguments and answer pickled."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def call(*args):
            with multiprocessing.get_context("fork").Pool(1) as pool:
                answer, seen = pool.apply(run_in_child, (fn, args))
            GPU_CALLS.append({"seconds": duration(*args), **seen})
            return answer

        return call

    return decorate


def run_in_child(fn: Callable, args: tuple) -> tuple[object, dict]:
    """The call, and the child's threads and service counts after it (they die with the child)."""
    answer = fn(*args)
    return answer, {"threads": [t.name for t in threading.enumerate()],
                    "stats": dataclasses.asdict(app.service.stats)}


sys.modules["spaces"] = types.ModuleType("spaces")  # app.py decorates with it only where SPACES_ZERO_GPU is set
sys.modules["spaces"].GPU = gpu

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


def call_batch(mode: str, paths: list[str]) -> dict:
    """/transcribe_file given one call per file at once, greedy, as Gradio's queue hands a batch over:
    one list per parameter, through Gradio's own batch processing."""
    endpoint = next(fn for fn in app.demo.fns.values() if fn.api_name == "transcribe_file")
    n = len(paths)
    columns = [[{"path": path} for path in paths], ["auto"] * n, [mode] * n, [1] * n, [False] * n, [""] * n,
               [False] * n]
    out = asyncio.run(app.demo.process_api(block_fn=endpoint, inputs=columns))
    return {"zero_gpu": app.ZERO_GPU, "batch": endpoint.batch, "max_batch_size": endpoint.max_batch_size,
            "answers": list(out["data"][0]), "gpu_calls": GPU_CALLS}


if __name__ == "__main__":
    parent_threads = [t.name for t in threading.enumerate()]
    if sys.argv[1] == "--batch":
        print(json.dumps({"parent_threads": parent_threads, **call_batch(sys.argv[2], sys.argv[3:])}))
        sys.exit()
    audio_path, mode = sys.argv[1], sys.argv[2]
    batch_size = int(sys.argv[3]) if len(sys.argv) > 3 else None
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply(call_in_child, (audio_path, mode, batch_size))
    print(json.dumps({"parent_threads": parent_threads, **child}))
