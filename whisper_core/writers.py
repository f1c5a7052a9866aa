"""Subtitle and text writers for results, and the time alignment of a translation to its transcript."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

FORMATS = ("txt", "vtt", "srt", "tsv", "json")


def format_timestamp(seconds: float, *, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """12.5 -> '00:12.500' ('00:00:12,500' for SRT)."""
    if seconds < 0:
        raise ValueError("a timestamp cannot be negative")
    ms = round(seconds * 1000.0)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def _cues(segments: list[dict]) -> list[dict]:
    """Segments that carry text (the engine keeps empty ones, for parity with the reference)."""
    return [s for s in segments if s["text"].strip()]


def to_txt(result: dict) -> str:
    return "".join(f"{s['text'].strip()}\n" for s in _cues(result["segments"]))


def to_srt(result: dict) -> str:
    blocks = []
    for i, s in enumerate(_cues(result["segments"]), start=1):
        start = format_timestamp(s["start"], always_include_hours=True, decimal_marker=",")
        end = format_timestamp(s["end"], always_include_hours=True, decimal_marker=",")
        blocks.append(f"{i}\n{start} --> {end}\n{s['text'].strip().replace('-->', '->')}\n")
    return "\n".join(blocks)


def to_vtt(result: dict) -> str:
    blocks = ["WEBVTT\n"]
    for s in _cues(result["segments"]):
        blocks.append(f"{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}\n"
                      f"{s['text'].strip().replace('-->', '->')}\n")
    return "\n".join(blocks)


def to_tsv(result: dict) -> str:
    """Start and end in integer milliseconds, as spreadsheet tools read them best."""
    rows = ["start\tend\ttext"]
    for s in _cues(result["segments"]):
        text = s["text"].strip().replace("\t", " ")
        rows.append(f"{round(1000 * s['start'])}\t{round(1000 * s['end'])}\t{text}")
    return "\n".join(rows) + "\n"


def to_json(result: dict) -> str:
    return json.dumps(result, ensure_ascii=False, indent=1)


RENDERERS: dict[str, Callable[[dict], str]] = {
    "txt": to_txt, "vtt": to_vtt, "srt": to_srt, "tsv": to_tsv, "json": to_json,
}


def align_by_time(transcript: list[dict], translation: list[dict]) -> list[str]:
    """One English line per transcript segment: each translated segment goes to the transcript segment
    it overlaps most in time (the nearest one when it overlaps none)."""
    cues = _cues(transcript)
    lines: list[list[str]] = [[] for _ in cues]
    if not cues:
        return []
    for seg in _cues(translation):
        def overlap(cue: dict, seg: dict = seg) -> float:
            return min(cue["end"], seg["end"]) - max(cue["start"], seg["start"])

        best = max(range(len(cues)), key=lambda i: overlap(cues[i]))
        lines[best].append(seg["text"].strip())
    return [" ".join(parts) for parts in lines]


def to_bilingual(transcript: dict, translation: dict, *, fmt: str = "srt") -> str:
    """Subtitles whose every cue holds the original line and its English translation under it."""
    cues = _cues(transcript["segments"])
    english = align_by_time(transcript["segments"], translation["segments"])
    if fmt == "srt":
        blocks = []
        for i, (cue, line) in enumerate(zip(cues, english, strict=True), start=1):
            start = format_timestamp(cue["start"], always_include_hours=True, decimal_marker=",")
            end = format_timestamp(cue["end"], always_include_hours=True, decimal_marker=",")
            blocks.append(f"{i}\n{start} --> {end}\n{cue['text'].strip()}\n{line}\n".replace("\n\n", "\n"))
        return "\n".join(blocks)
    if fmt == "vtt":
        blocks = ["WEBVTT\n"]
        for cue, line in zip(cues, english, strict=True):
            body = f"{cue['text'].strip()}\n{line}".rstrip("\n")
            blocks.append(f"{format_timestamp(cue['start'])} --> {format_timestamp(cue['end'])}\n{body}\n")
        return "\n".join(blocks)
    raise ValueError(f"bilingual subtitles are srt or vtt, not {fmt!r}")


def write_result(result: dict, fmt: str, output_dir: Path, stem: str) -> list[Path]:
    """Write `stem.<fmt>` (every format for 'all') into `output_dir`; returns the paths written."""
    formats = FORMATS if fmt == "all" else (fmt,)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in formats:
        path = output_dir / f"{stem}.{f}"
        path.write_text(RENDERERS[f](result), encoding="utf-8")
        written.append(path)
    return written
