"""What the web page shows, built from the engine's plain results: the table rows, the language line, the
source card, the player's audio and the files to download. Kept out of app.py so that the page is wiring
only, and so that what a user reads can be tested without a browser."""

from __future__ import annotations

import html
import re
import subprocess
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from .audio import SAMPLE_RATE, ffmpeg_executable
from .tasks import ENGLISH, NOT_REQUESTED, UNSUPPORTED
from .tokenizer import LANGUAGES
from .writers import RENDERERS, SubtitleLayout, align_by_time, clock, text_segments, to_bilingual, to_srt

DOWNLOAD_FORMATS = ("txt", "srt", "vtt", "json")
WORD_LAYOUT = SubtitleLayout(max_line_width=42, max_line_count=2, highlight_words=True)
PLAYBACK_BITRATE = "32k"  # 16 kHz mono speech: about 14 MB an hour

# Why a result has no translation (the plan's word for it), as the page and the API say it.
CELL_NOTES = {ENGLISH: "(already English)", UNSUPPORTED: "(this model cannot translate)"}
LINE_NOTES = {
    ENGLISH: "The speech is English, so nothing needed translating.",
    UNSUPPORTED: "This model only transcribes: it cannot translate to English.",
}
NO_SPEECH = "No speech was found in this audio."
API_NOTES = {
    NOT_REQUESTED: "not requested (mode 'transcribe')",
    ENGLISH: "not needed: the speech is English",
    UNSUPPORTED: "not available: this model cannot translate",
}


def language_name(code: str | None) -> str:
    """'fr' -> 'French'; an unknown code is shown as it is."""
    if not code:
        return "unknown"
    return LANGUAGES.get(code, code).title()


def percent(p: float) -> str:
    """97%, 2.3%, <0.1%: as many digits as the eye needs."""
    value = 100 * p
    if value >= 9.95:
        return f"{value:.0f}%"
    if value >= 0.05:
        return f"{value:.1f}%"
    return "<0.1%"


def language_line(
    language: str | None,
    probs: dict[str, float] | None,
    status: str | None = None,
    *,
    found_speech: bool = True,
    chosen: bool = True,
) -> str:
    """Markdown: the detected language with the top three probabilities (or the language the user chose, or
    the only one the model knows), and why there is no translation (or no text at all) where that needs
    saying."""
    if language is None:
        return ""
    if probs:
        top = sorted(probs.items(), key=lambda item: -item[1])[:3]
        others = " · ".join(f"{language_name(code)} {percent(p)}" for code, p in top if code != language)
        line = f"Detected language: **{language_name(language)}** {percent(probs.get(language, 0.0))}"
        line += f" · {others}" if others else ""
    else:
        why = "chosen, not detected" if chosen else "the only language this model knows"
        line = f"Language: **{language_name(language)}** ({why})"
    note = LINE_NOTES.get(status or "") if found_speech else NO_SPEECH
    return f"{line}  \n{note}" if note else line


@dataclass(frozen=True)
class Table:
    """The results table: one row per segment, and where each row starts in the audio."""

    headers: list[str]
    rows: list[list[str]]
    starts: list[float]


TIME_HEADER = "Time"
TRANSLATION_HEADER = "English translation"


def _span(segment: dict) -> str:
    return f"{clock(segment['start'])}–{clock(segment['end'])}"


def build_table(
    transcript: Sequence[dict],
    translation: Sequence[dict],
    *,
    tasks: Sequence[str],
    language: str | None = None,
    status: str | None = None,
) -> Table:
    """Rows for the segments decoded so far. With both tasks the English goes beside the transcript
    segment it overlaps most; `status` (see `translation_status`) fills that column when there is none."""
    transcript_header = f"Transcript ({language_name(language)})" if language else "Transcript"
    if "transcribe" not in tasks:
        cues = text_segments(translation)
        return Table([TIME_HEADER, TRANSLATION_HEADER], [[_span(s), s["text"].strip()] for s in cues],
                     [s["start"] for s in cues])
    cues = text_segments(transcript)
    starts = [s["start"] for s in cues]
    if "translate" not in tasks:
        return Table([TIME_HEADER, transcript_header], [[_span(s), s["text"].strip()] for s in cues], starts)
    note = CELL_NOTES.get(status or "")
    english = [note] * len(cues) if note else align_by_time(list(cues), list(translation))
    rows = [[_span(s), s["text"].strip(), line] for s, line in zip(cues, english, strict=True)]
    return Table([TIME_HEADER, transcript_header, TRANSLATION_HEADER], rows, starts)


def live_tail(tentative: dict[str, str], tasks: Sequence[str], note: str = "") -> str:
    """HTML under the live table: the words heard after the committed rows, which the next decodes may
    still change (greyed and italic, in the table's columns), and a note (a limit, the server's lag)."""
    cells = "".join(f'<div class="live-cell">{html.escape(tentative.get(task, ""))}</div>' for task in tasks
                    if task in ("transcribe", "translate"))
    warning = f'<div class="live-note">{html.escape(note)}</div>' if note else ""
    return f'<div class="live-tail"><div class="live-time"></div>{cells}</div>{warning}'


def _http_url(url: str | None) -> str | None:
    """The link itself when it is http(s); anything else (javascript:, data:) is not put in the page."""
    return url if url and urlparse(url).scheme in ("http", "https") else None


def source_card(metadata: dict) -> str:
    """HTML for what the input is: thumbnail, title (linked to its page), uploader and length. Every value
    is escaped: titles and links come from the uploader or the remote site."""
    title = html.escape(str(metadata.get("title") or "Untitled"))
    link = _http_url(metadata.get("webpage_url"))
    if link:
        title = f'<a href="{html.escape(link)}" target="_blank" rel="noopener noreferrer">{title}</a>'
    details = [html.escape(str(metadata["uploader"]))] if metadata.get("uploader") else []
    if metadata.get("duration"):
        details.append(clock(float(metadata["duration"])))
    thumbnail = _http_url(metadata.get("thumbnail"))
    image = (f'<img class="source-thumb" src="{html.escape(thumbnail)}" alt="" referrerpolicy="no-referrer">'
             if thumbnail else "")
    return (f'<div class="source-card">{image}<div class="source-text"><div class="source-title">{title}</div>'
            f'<div class="source-details">{" · ".join(details)}</div></div></div>')


def file_stem(title: str | None) -> str:
    """A file name from a title: letters, digits, '-' and '_' only, at most 60 characters."""
    stem = re.sub(r"[^\w\-]+", "_", title or "").strip("_")[:60]
    return stem or "transcript"


def write_downloads(directory: Path, stem: str, transcript: dict | None, translation: dict | None) -> list[Path]:
    """txt, srt, vtt and json of each result, the bilingual srt (original line over English line), and
    when words are timed, an srt of short lines whose spoken word is underlined."""
    written: list[Path] = []

    def write(name: str, text: str) -> None:
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)

    language = (transcript or translation or {}).get("language") or "xx"
    english = "en-translation" if transcript is not None and language == "en" else "en"
    for result, suffix in ((transcript, language), (translation, english)):
        if result is not None:
            for fmt in DOWNLOAD_FORMATS:
                write(f"{stem}.{suffix}.{fmt}", RENDERERS[fmt](result))
    if transcript is not None and translation is not None:
        write(f"{stem}.{language}-en.srt", to_bilingual(transcript, translation, fmt="srt"))
    if transcript is not None and any(s.get("words") for s in transcript["segments"]):
        write(f"{stem}.{language}.words.srt", to_srt(transcript, WORD_LAYOUT))  # karaoke-style, timed per word
    return written


def write_zip(path: Path, files: Sequence[Path]) -> Path:
    """One archive of several runs' downloads; a name met again gets its folder's name in front."""
    seen: set[str] = set()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            name = file.name if file.name not in seen else f"{file.parent.name}-{file.name}"
            seen.add(name)
            archive.write(file, name)
    return path


def write_playback(audio: np.ndarray, path: Path) -> Path:
    """An MP3 of the decoded signal for the page's player: small, playable in every browser, and on the
    same timeline as the timestamps (both count from the first decoded sample)."""
    command = [
        ffmpeg_executable(), "-nostdin", "-v", "error", "-y",
        "-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:",
        "-c:a", "libmp3lame", "-b:a", PLAYBACK_BITRATE, "-compression_level", "9", str(path),
    ]  # fmt: skip
    subprocess.run(command, input=np.ascontiguousarray(audio, dtype=np.float32).tobytes(), check=True,
                   capture_output=True)
    return path


def api_result(metadata: dict, results: dict[str, dict | None], status: str | None) -> dict:
    """What the API returns: both results as the engine gives them, the language and its probabilities,
    the source's metadata, and why there is no translation when there is none."""
    first = results.get("transcribe") or results.get("translate") or {}
    return {
        "language": first.get("language"),
        "language_probs": first.get("language_probs"),
        "transcribe": results.get("transcribe"),
        "translate": results.get("translate"),
        "translation_note": API_NOTES.get(status or ""),
        "source": metadata,
    }
