"""The command line, run as a user runs it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "whisper_core", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_cli_writes_subtitles(shared, tmp_path):
    proc = _run(str(shared / "audio" / "en_jfk_ask_not.flac"), "--output_format", "srt", "--beam_size", "1",
                "--output_dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    srt = (tmp_path / "en_jfk_ask_not.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> ")
    assert "ask not what your country can do for you" in srt
    assert "ask what you can do for your country" in proc.stdout  # verbose prints segments


def test_cli_both_tasks_writes_bilingual(shared, tmp_path):
    # No fallback to sampling: the translation of this window is below the log-prob threshold, and a
    # sampled rewrite would differ from run to run.
    proc = _run(str(shared / "audio" / "fr_sous_le_consulat.wav"), "--task", "both", "--beam_size", "1",
                "--temperature_increment_on_fallback", "None", "--output_format", "txt",
                "--output_dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "consulat" in (tmp_path / "fr_sous_le_consulat.transcribe.txt").read_text()
    bilingual = (tmp_path / "fr_sous_le_consulat.bilingual.srt").read_text().splitlines()
    assert "consulat" in bilingual[2] and bilingual[3].startswith("Under")


def test_cli_bad_input_is_one_line_not_a_traceback(tmp_path):
    bogus = tmp_path / "notes.mp3"
    bogus.write_text("this is not audio")
    proc = _run(str(bogus), "--output_dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "notes.mp3" in proc.stderr


def test_cli_word_layout_and_vad(shared, tmp_path):
    """With the int8 mode too: its words are timed from the same cross-attention."""
    proc = _run(str(shared / "audio" / "en_jfk_ask_not.flac"), "--beam_size", "1", "--word_timestamps", "True",
                "--int8", "True",
                "--vad_filter", "True", "--max_line_width", "20", "--max_line_count", "1", "--output_format", "vtt",
                "--output_dir", str(tmp_path), "--verbose", "False", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cues = (tmp_path / "en_jfk_ask_not.vtt").read_text().split("\n\n")[1:]
    assert len(cues) > 4
    assert all(len(line) <= 20 for cue in cues for line in cue.splitlines()[1:])
    assert "country" in " ".join(cues)


def test_cli_layout_needs_word_timestamps(tmp_path):
    proc = _run("x.mp3", "--max_line_width", "20", cwd=tmp_path)
    assert proc.returncode == 2 and "--word_timestamps True" in proc.stderr


def test_cli_other_schemes_are_refused_as_links(tmp_path):
    proc = _run("ftp://example.org/a.mp3", "--output_dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    assert "Only http:// and https:// links" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_batched_long_form(shared, tmp_path):
    """Two greetings 30 s apart: two chunks, each with the input's times."""
    proc = _run(str(shared / "audio" / "fr_bonjour_long_silence.mp3"), "--batch_size", "4", "--beam_size", "1",
                "--language", "fr", "--temperature_increment_on_fallback", "None", "--output_format", "json",
                "--output_dir", str(tmp_path), "--verbose", "False", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = __import__("json").loads((tmp_path / "fr_bonjour_long_silence.json").read_text())
    assert result["language"] == "fr" and result["text"].lower().count("bonjour") == 2
    assert result["segments"][0]["start"] < 2 and result["segments"][-1]["start"] > 30
