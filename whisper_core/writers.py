"""Subtitle and text writers for results, how times are written, and the time alignment of a translation
to its transcript."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


def clock(seconds: float) -> str:
    """0:07 for 7.9 s, 2:14:05 for 8045 s: how people read lengths and positions. Seconds are cut, not
    rounded, as a player's clock shows them."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def text_segments(segments: Sequence[dict]) -> list[dict]:
    """Segments that carry text (the engine keeps empty ones, for parity with the reference)."""
    return [s for s in segments if s["text"].strip()]


@dataclass(frozen=True)
class SubtitleLayout:
    """How cues are cut from word timings (the reference CLI's flags). Without words, or with nothing
    set, each segment is one cue."""

    max_line_width: int | None = None  # characters per line
    max_line_count: int | None = None  # lines per cue; when set, cues may span segments
    max_words_per_line: int | None = None
    highlight_words: bool = False  # underline each word while it is spoken

    @property
    def uses_words(self) -> bool:
        return any((self.max_line_width, self.max_line_count, self.max_words_per_line, self.highlight_words))


class Renderer(Protocol):
    """A result as the text of one file format. Every renderer takes a layout, so that all are called
    alike; only srt and vtt cut their cues by it."""

    def __call__(self, result: dict, layout: SubtitleLayout | None = None) -> str: ...


LONG_PAUSE_S = 3.0  # a pause this long starts a new cue when cues may span segments


def _word_cues(segments: list[dict], layout: SubtitleLayout) -> list[list[dict]]:
    """Group words into cues of lines: a line ends at the width or word limit, a cue at the line limit,
    at a long pause or (when the line count is not set) at the end of a segment. A word that starts a
    line after the first carries a leading newline."""
    width = layout.max_line_width or 1000
    per_line = layout.max_words_per_line or 1000
    keep_segments = layout.max_line_count is None or layout.max_line_width is None
    cues: list[list[dict]] = []
    cue: list[dict] = []
    line_len = line_words = 0
    lines = 1
    last_start = None
    for segment in segments:
        for n, original in enumerate(segment.get("words", [])):
            word = dict(original)
            pause = not keep_segments and last_start is not None and word["start"] - last_start > LONG_PAUSE_S
            new_segment = n == 0 and bool(cue) and keep_segments
            fits = line_len + len(word["word"]) <= width and line_words < per_line
            if line_len > 0 and fits and not pause and not new_segment:
                line_len += len(word["word"])
                line_words += 1
            else:
                word["word"] = word["word"].strip()
                full = layout.max_line_count is not None and lines >= layout.max_line_count
                if cue and (pause or new_segment or full):
                    cues.append(cue)
                    cue, lines = [], 1
                elif line_len > 0:
                    lines += 1
                    word["word"] = "\n" + word["word"]
                line_len, line_words = len(word["word"].strip()), 1
            cue.append(word)
            last_start = word["start"]
    if cue:
        cues.append(cue)
    return cues


def subtitle_cues(result: dict, layout: SubtitleLayout | None = None) -> list[tuple[float, float, str]]:
    """(start, end, text) of every cue, laid out from the words when the layout asks for it."""
    layout = layout or SubtitleLayout()
    segments = text_segments(result["segments"])
    if not layout.uses_words or not any(s.get("words") for s in segments):
        return [(s["start"], s["end"], s["text"].strip().replace("-->", "->")) for s in segments]
    out = []
    for cue in _word_cues(segments, layout):
        text = "".join(w["word"] for w in cue)
        if not layout.highlight_words:
            out.append((cue[0]["start"], cue[-1]["end"], text))
            continue
        last = cue[0]["start"]
        for i, word in enumerate(cue):
            if word["start"] > last:
                out.append((last, word["start"], text))
            marked = "".join(
                re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", w["word"]) if j == i else w["word"] for j, w in enumerate(cue)
            )
            out.append((word["start"], word["end"], marked))
            last = word["end"]
    return out


def to_txt(result: dict, layout: SubtitleLayout | None = None) -> str:
    return "".join(f"{s['text'].strip()}\n" for s in text_segments(result["segments"]))


def to_srt(result: dict, layout: SubtitleLayout | None = None) -> str:
    blocks = []
    for i, (start, end, text) in enumerate(subtitle_cues(result, layout), start=1):
        start_s = format_timestamp(start, always_include_hours=True, decimal_marker=",")
        end_s = format_timestamp(end, always_include_hours=True, decimal_marker=",")
        blocks.append(f"{i}\n{start_s} --> {end_s}\n{text}\n")
    return "\n".join(blocks)


def to_vtt(result: dict, layout: SubtitleLayout | None = None) -> str:
    blocks = ["WEBVTT\n"]
    for start, end, text in subtitle_cues(result, layout):
        blocks.append(f"{format_timestamp(start)} --> {format_timestamp(end)}\n{text}\n")
    return "\n".join(blocks)


def to_tsv(result: dict, layout: SubtitleLayout | None = None) -> str:
    """Start and end in integer milliseconds, as spreadsheet tools read them best."""
    rows = ["start\tend\ttext"]
    for s in text_segments(result["segments"]):
        text = s["text"].strip().replace("\t", " ")
        rows.append(f"{round(1000 * s['start'])}\t{round(1000 * s['end'])}\t{text}")
    return "\n".join(rows) + "\n"


def to_json(result: dict, layout: SubtitleLayout | None = None) -> str:
    return json.dumps(result, ensure_ascii=False, indent=1)


RENDERERS: dict[str, Renderer] = {
    "txt": to_txt, "vtt": to_vtt, "srt": to_srt, "tsv": to_tsv, "json": to_json,
}


def align_by_time(transcript: list[dict], translation: list[dict]) -> list[str]:
    """One English line per transcript segment: each translated segment goes to the transcript segment
    it overlaps most in time (the nearest one when it overlaps none)."""
    cues = text_segments(transcript)
    lines: list[list[str]] = [[] for _ in cues]
    if not cues:
        return []
    for seg in text_segments(translation):
        def overlap(cue: dict, seg: dict = seg) -> float:
            return min(cue["end"], seg["end"]) - max(cue["start"], seg["start"])

        best = max(range(len(cues)), key=lambda i: overlap(cues[i]))
        lines[best].append(seg["text"].strip())
    return [" ".join(parts) for parts in lines]


def to_bilingual(transcript: dict, translation: dict, *, fmt: str = "srt") -> str:
    """Subtitles whose every cue holds the original line and its English translation under it."""
    cues = text_segments(transcript["segments"])
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


def write_result(
    result: dict, fmt: str, output_dir: Path, stem: str, layout: SubtitleLayout | None = None
) -> list[Path]:
    """Write `stem.<fmt>` (every format for 'all') into `output_dir`; returns the paths written.
    `layout` shapes the srt and vtt cues."""
    formats = FORMATS if fmt == "all" else (fmt,)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in formats:
        path = output_dir / f"{stem}.{f}"
        path.write_text(RENDERERS[f](result, layout), encoding="utf-8")
        written.append(path)
    return written
