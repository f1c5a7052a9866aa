"""The live benchmark: its statistics and real-time rule on made-up commits, its report's verdicts, and
one short real run of the command (no speed is asserted: the machines differ)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import shared_dir

from whisper_core import live_bench as lb

ROOT = Path(__file__).resolve().parents[1]


def _run(lags_at: list[tuple[float, float]], duration: float = 90.0, end_lag: float | None = 1.0,
         task: str = "transcribe") -> lb.StreamRun:
    """A stream whose words end at the given times with the given lags."""
    commits = tuple(lb.Commit(end, end + lag) for end, lag in lags_at)
    return lb.StreamRun(task, duration, commits, "text", "en", steps=4, step_s=2.0, longest_step_s=0.9,
                        end_lag_s=end_lag)


def _steady(lag: float, growth: float = 0.0, end_lag: float | None = 1.0, task: str = "transcribe") -> lb.StreamRun:
    """Words every 10 s of a 90-s file, the last third's lags `growth` above the first's."""
    return _run([(t, lag + (growth if t >= 60 else 0.0)) for t in range(5, 90, 10)], end_lag=end_lag, task=task)


def test_latency_statistics():
    assert lb.latency([1.0, 2.0, 3.0, 4.0, 5.0]) == lb.Latency(5, 3.0, 4.6)
    assert lb.latency([]) == lb.Latency(0, None, None)
    assert lb.Commit(word_end=3.5, heard_s=5.0).lag_s == 1.5


def test_heard_by_runs_on_the_clock_past_the_end():
    assert lb.heard_by(fed_s=40.0, elapsed_s=41.2, duration_s=90.0, speed=1.0) == 40.0  # still pushing
    assert lb.heard_by(fed_s=90.0, elapsed_s=120.0, duration_s=90.0, speed=1.0) == 120.0  # 30 s behind
    assert lb.heard_by(fed_s=90.0, elapsed_s=30.0, duration_s=90.0, speed=4.0) == 120.0
    assert lb.heard_by(fed_s=90.0, elapsed_s=50.0, duration_s=90.0, speed=0.0) == 90.0  # no clock


def test_thirds_pool_streams_by_word_end():
    one = _run([(1.0, 1.0), (29.0, 3.0), (30.0, 9.0), (60.0, 2.0), (89.0, 4.0)])
    other = _run([(10.0, 5.0), (70.0, 6.0)])
    first, last = lb.thirds([one, other])
    assert first == lb.Latency(3, 3.0, pytest.approx(4.6))
    assert last.words == 3 and last.median_s == 4.0
    assert lb.lags_between(one.commits, 29.0, 60.0) == [3.0, 9.0]


def test_real_time_rule():
    steady, grows = lb.thirds([_steady(2.0, growth=1.4)]), lb.thirds([_steady(2.0, growth=1.6)])
    assert lb.keeps_real_time(*steady, end_lag_s=lb.END_LAG_LIMIT_S) is True
    assert lb.keeps_real_time(*grows, end_lag_s=1.0) is False
    assert lb.keeps_real_time(*steady, end_lag_s=lb.END_LAG_LIMIT_S + 0.1) is False
    assert lb.keeps_real_time(*steady, end_lag_s=None) is None  # speed 0: no clock to keep
    assert lb.keeps_real_time(lb.latency([]), steady[1], end_lag_s=1.0) is False


def test_verdict_takes_the_slowest_stream():
    v = lb.verdict(lb.CapacityRun(2, False, (_steady(1.0, end_lag=2.0), _steady(1.0, end_lag=7.0)), 0, 0, None))
    assert v.end_lag_s == 7.0 and v.growth_s == 0.0 and v.kept is False
    assert lb.verdict(lb.CapacityRun(1, False, (_steady(1.0, end_lag=None),), 0, 0, None)).kept is None


def test_report_says_what_is_missed():
    fast = lb.FileResult("a.wav", "en", "human", _steady(1.0), 0.10, 0.09, 1.0, 0.25)
    slow = lb.FileResult("b.wav", "fr", "human", _steady(6.0), 0.20, 0.10, 1.0, None)
    english = lb.FileResult("b.wav", "fr", "human", _steady(9.0, task="translate"), 0.47, 0.45, 1.0, None)
    text = lb.file_section([fast, slow, english])
    row = next(line for line in text.splitlines() if line.startswith("| a.wav |"))
    assert row == ("| a.wav | transcribe | en / en | 90.0 | 9 | 1.00 | 1.00 | 10.0% | 9.0% | +1.0 | human | 4 | 0.50 "
                   "| 0.90 | 1.00 | 1.0 | 0.25 |")
    assert "| all, pooled | transcribe |  | 180.0 | 18 | 3.50 | 6.00 |" in text  # each task pooled on its own
    assert "| all, pooled | translate |  | 90.0 | 9 | 9.00 | 9.00 |" in text
    assert "pooled, transcribe: latency median 3.50 s ≤ 3 s: MISSED; p90 6.00 s ≤ 5 s: MISSED." in text
    assert "2 of 3 rows; MISSED on b.wav, transcribe (+10.0)." in text
    runs = [lb.CapacityRun(2, False, (_steady(1.0), _steady(1.0)), 0, 0, None),
            lb.CapacityRun(2, True, (_steady(1.0), _steady(1.0, growth=3.0)), 12, 1, 0.5)]
    text = lb.capacity_section("f.mp3", "u.ogg", runs)
    assert "| 2 | 12 windows, 1 passes | 1.00 / 1.00 | 2.50 / 4.00 | 1.50 | 1.00 | NO | 0.50 | 0.90 | 0.50 |" in text
    assert "2 streams at once keep real time: without upload: met; with upload: MISSED." in text


def test_other_load_is_measured_here():
    load = lb.OtherLoad()
    time.sleep(0.05)
    assert lb.cpu_seconds() is None or 0.0 <= load.cores() <= os.cpu_count()


def test_stream_counts():
    assert lb._streams("1,2,3") == (1, 2, 3)
    for bad in ("", "0", "two"):
        with pytest.raises(argparse.ArgumentTypeError):
            lb._streams(bad)


def test_short_real_run():
    """Spanish at 4× real time through the command, both tasks as the page runs them: the machine, a row
    per task, latency and WER lines."""
    clip = shared_dir() / "audio" / "es_arenas_blanquecinas.wav"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "whisper_core.live_bench", str(clip), "--speed", "4", "--task",
                           "both"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith("Machine: ") and "AVX" in out and "torch threads" in out
    assert "Targets: one stream latency median ≤ 3 s, p90 ≤ 5 s" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| es_arenas_blanquecinas.wav |")]
    assert [row[1] for row in rows] == ["transcribe", "translate"], rows
    for row in rows:
        assert row[2] == "es / es" and row[3] == "8.7" and int(row[4]) > 8
        assert float(row[5]) <= float(row[6])  # median, p90
        assert float(row[7].rstrip("%")) < 80 and float(row[8].rstrip("%")) < 80  # live, offline WER
    assert "pooled, transcribe: latency median " in out and "pooled, translate: latency median " in out
    assert "Live WER within 3 points of offline" in out
