"""The speed benchmark runs end to end for our engine, sequential and batched, and reports sane numbers (no
speed is asserted: the machines differ); it takes every engine's name; and the weights it hands
openai-whisper are ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from whisper_core import bench as bench_module
from whisper_core.loading import load_checkpoint
from whisper_core.openai_checkpoint import fuse_attention, split_attention

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "examples" / "en_demo.mp3"  # 6.6 s of English speech
USERS = 2


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    command = [sys.executable, "-m", "whisper_core.bench", str(CLIP), "--runs", "1",
               "--engines", "ours,ours-int8,ours-batched", "--decodes", "greedy", "--users", str(USERS),
               "--json", str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads(out.read_text())


def test_table_rows(bench):
    table, _ = bench
    assert table.startswith("Machine: ") and "torch " in table and "2 threads per engine" in table
    rows = [line for line in table.splitlines() if line.startswith("| en_demo.mp3 |")]
    assert [row.split(" | ")[2:5] for row in rows] == [["ours", "greedy", "transcribe"],
                                                       ["ours int8", "greedy", "transcribe"],
                                                       ["ours batched", "greedy", "transcribe"],
                                                       ["ours", "greedy", "transcribe + translate"],
                                                       ["ours int8", "greedy", "transcribe + translate"],
                                                       ["ours batched", "greedy", "transcribe + translate"]]
    assert "| ours ÷ this | ours batched ÷ this | WER vs ours |" in table
    assert all(row.split(" | ")[-3] == "1.00" for row in rows if row.split(" | ")[2] == "ours")
    assert all(row.split(" | ")[-2] == "1.00" for row in rows if row.split(" | ")[2] == "ours batched")
    assert f"{bench_module.BATCH_SIZE} chunks at once" in table
    assert f"| sequential | {USERS} one after another |" in table and f"| batched | {USERS} at once |" in table
    assert "model loads in each: 1." in table
    assert "### GPU" in table


def test_numbers_are_plausible(bench):
    _, report = bench
    cases = report["cases"]
    assert [(c["case"]["engine"], c["case"]["task"]) for c in cases] == [
        ("ours", "transcribe"), ("ours-int8", "transcribe"), ("ours-batched", "transcribe"),
        ("ours", "both"), ("ours-int8", "both"), ("ours-batched", "both")]
    assert report["config"]["batch_size"] == bench_module.BATCH_SIZE
    for c in cases:
        assert c["audio_s"] == pytest.approx(6.56, abs=0.1)
        assert 0 < c["load_s"] and 0 < c["load_first_s"]
        assert len(c["walls_s"]) == 1 and c["walls_s"][0] > 0
        assert 100 < c["peak_rss_mib"] < 8192
        assert "demo" in c["texts"]["transcribe"].lower()
    assert all(set(c["texts"]) == {"transcribe", "translate"} for c in cases[3:])
    for service in report["service"]["modes"].values():
        assert service["model_loads"] == 1
        for way in ("sequential", "concurrent"):
            assert len(service[way]["latencies_s"]) == USERS and all(t > 0 for t in service[way]["latencies_s"])
        assert service["concurrent"]["stats"]["largest_step"] >= 1
        assert 100 < service["idle_rss_mib"] <= service["peak_rss_mib"] < 8192 and service["after_rss_mib"] > 100
    # English: the translations are dropped; one request's one window a step
    assert report["service"]["modes"]["sequential"]["sequential"]["stats"]["largest_step"] == 1
    assert report["gpu"] is None or "error" not in report["gpu"]


def test_engine_names():
    """Sequential engines first, then the batched ones; all of them by default, any of them by name."""
    names = [e.name for e in bench_module.ENGINES]
    batched = [e.name for e in bench_module.ENGINES if e.batched]
    assert batched == ["ours-batched", "ours-batched-int8", "faster-whisper-batched-int8",
                       "faster-whisper-batched-float32"]
    assert names[-len(batched):] == batched
    assert bench_module.parse_args([str(CLIP)]).engines == tuple(names)
    args = bench_module.parse_args([str(CLIP), "--engines", ",".join(batched)])
    assert args.engines == tuple(batched)
    with pytest.raises(SystemExit):
        bench_module.parse_args([str(CLIP), "--engines", "faster-whisper-batched"])


def test_missing_reference_engines_are_noted():
    """An interpreter without faster-whisper runs ours (sequential and batched) and notes the rest."""
    reference = {"python": "3.11", **dict.fromkeys(bench_module.REFERENCE_PACKAGES)}
    names = ("ours", "ours-batched", "faster-whisper-int8", "faster-whisper-batched-int8")
    config = bench_module.BenchConfig((str(CLIP),), 1, 2, sys.executable, names, ("greedy",), ("transcribe",), 0,
                                      "cpu", False, None)
    engines, notes = bench_module.select_engines(config, reference)
    assert [e.name for e in engines] == ["ours", "ours-batched"]
    assert [n.split(":")[0] for n in notes] == ["faster-whisper int8", "faster-whisper batched int8"]
    assert all("not installed" in n for n in notes)


def test_openai_names_round_trip():
    state_dict, dims, _, _ = load_checkpoint()
    theirs = split_attention(state_dict, dims)
    assert "encoder.blocks.0.attn.key.weight" in theirs and "encoder.blocks.0.attn.key.bias" not in theirs
    assert "decoder.blocks.0.cross_attn.value.bias" in theirs and "decoder.blocks.0.attn.qkv.weight" not in theirs
    back = fuse_attention(theirs, dims)
    assert back.keys() == state_dict.keys()
    assert all(torch.equal(back[k], state_dict[k]) for k in state_dict)
