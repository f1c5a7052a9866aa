"""The speed benchmark runs end to end for our engine and reports sane numbers (no speed is asserted: the
machines differ), and the weights it hands openai-whisper are ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from whisper_core.loading import load_checkpoint
from whisper_core.openai_checkpoint import fuse_attention, split_attention

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "examples" / "en_demo.mp3"  # 6.6 s of English speech
USERS = 2


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    command = [sys.executable, "-m", "whisper_core.bench", str(CLIP), "--runs", "1", "--engines", "ours,ours-int8",
               "--decodes", "greedy", "--users", str(USERS), "--json", str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads(out.read_text())


def test_table_rows(bench):
    table, _ = bench
    assert table.startswith("Machine: ") and "torch " in table and "2 threads per engine" in table
    rows = [line for line in table.splitlines() if line.startswith("| en_demo.mp3 |")]
    assert [row.split(" | ")[2:5] for row in rows] == [["ours", "greedy", "transcribe"],
                                                       ["ours int8", "greedy", "transcribe"],
                                                       ["ours", "greedy", "transcribe + translate"],
                                                       ["ours int8", "greedy", "transcribe + translate"]]
    assert f"| {USERS} one after another |" in table and f"| {USERS} at once |" in table
    assert "Model loads: 1." in table
    assert "### GPU" in table


def test_numbers_are_plausible(bench):
    _, report = bench
    cases = report["cases"]
    assert [(c["case"]["engine"], c["case"]["task"]) for c in cases] == [
        ("ours", "transcribe"), ("ours-int8", "transcribe"), ("ours", "both"), ("ours-int8", "both")]
    for c in cases:
        assert c["audio_s"] == pytest.approx(6.56, abs=0.1)
        assert 0 < c["load_s"] and 0 < c["load_first_s"]
        assert len(c["walls_s"]) == 1 and c["walls_s"][0] > 0
        assert 100 < c["peak_rss_mib"] < 8192
        assert "demo" in c["texts"]["transcribe"].lower()
    assert set(cases[2]["texts"]) == set(cases[3]["texts"]) == {"transcribe", "translate"}
    service = report["service"]
    assert service["model_loads"] == 1
    for mode in ("sequential", "concurrent"):
        assert len(service[mode]["latencies_s"]) == USERS and all(t > 0 for t in service[mode]["latencies_s"])
    assert service["sequential"]["stats"]["largest_step"] == 1  # English: the translations are dropped
    assert service["concurrent"]["stats"]["largest_step"] >= 1
    assert report["gpu"] is None or "error" not in report["gpu"]


def test_openai_names_round_trip():
    state_dict, dims, _, _ = load_checkpoint()
    theirs = split_attention(state_dict, dims)
    assert "encoder.blocks.0.attn.key.weight" in theirs and "encoder.blocks.0.attn.key.bias" not in theirs
    assert "decoder.blocks.0.cross_attn.value.bias" in theirs and "decoder.blocks.0.attn.qkv.weight" not in theirs
    back = fuse_attention(theirs, dims)
    assert back.keys() == state_dict.keys()
    assert all(torch.equal(back[k], state_dict[k]) for k in state_dict)
