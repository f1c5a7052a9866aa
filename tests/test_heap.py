"""The C heap under the model: once a model is loaded, an encoder pass takes its activations from memory
the previous pass freed instead of fresh mappings, each page of which is a page fault."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from whisper_core import heap

_PASS_FAULTS = """
import resource, sys, torch
from whisper_core import heap
from whisper_core.model import AudioEncoder
torch.set_num_threads(1)
if sys.argv[1] == "reuse":
    heap.reuse_freed_memory()
encoder = AudioEncoder(80, 1500, 512, 8, 6).eval()
mel = torch.randn(1, 80, 3000)
faults = []
with torch.inference_mode():
    encoder(mel)
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        encoder(mel)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults))
"""


def _steady_pass_faults(mode: str) -> int:
    """The fewest page faults of an encoder pass after the first, in a fresh process."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", _PASS_FAULTS, mode], env=env, capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[-1])


@pytest.mark.skipif(heap._glibc() is None, reason="the heap settings are glibc's; this C library has none")
def test_an_encoder_pass_reuses_freed_memory():
    """A base-sized encoder pass touches about 100 MB of activations: 25,000 pages. glibc's defaults map
    them afresh on every pass; with the model's settings a pass after the first faults on almost none."""
    default, reused = _steady_pass_faults("default"), _steady_pass_faults("reuse")
    assert reused < 1000, reused
    assert default > 10 * max(reused, 100), (default, reused)
