"""Media intake: an uploaded file, a microphone recording or a link becomes Whisper's input signal (float32,
16 kHz, mono) plus what the page shows about it, or a `MediaError` whose message tells the user what to do.

Links go through yt-dlp (audio only, one video, length and size checked before and during the download,
every connection checked by `url_safety`). Files are decoded by ffmpeg, which is asked for the length first
so that an over-long upload is refused before any decoding.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
from yt_dlp.utils import DownloadCancelled, GeoRestrictedError, UnsupportedError, YoutubeDLError

from . import environment
from .audio import SAMPLE_RATE, ffmpeg_executable
from .url_safety import (
    ALLOW_PRIVATE_ENV,
    BlockedAddressError,
    GuardedYoutubeDL,
    default_policy,
    has_allowed_scheme,
)
from .writers import clock

MAX_DURATION_ENV = "WHISPER_MAX_DURATION"  # seconds of audio
MAX_BYTES_ENV = "WHISPER_MAX_BYTES"  # bytes of file, uploaded or downloaded
TIMEOUT_ENV = "WHISPER_URL_TIMEOUT"  # seconds yt-dlp waits on a silent connection
COOKIES_ENV = "WHISPER_YTDLP_COOKIES"  # a Netscape cookies file, for YouTube's sign-in checks
TEMP_DIR_ENV = "WHISPER_TEMP_DIR"  # where each link gets a temporary directory of its own
DEFAULT_MAX_DURATION_S = 3600.0
DEFAULT_MAX_BYTES = 1_000_000_000
DEFAULT_TIMEOUT_S = 20.0
DURATION_SLACK_S = 1.0  # containers round their duration; do not refuse a file for that
RETRIES = 2  # per request and per fragment; each retry may wait the whole timeout
PROBE_TIMEOUT_S = 60.0
TEMP_PREFIX = "whisper-url-"
LOCAL_ONLY = "file"  # ffmpeg's protocol whitelist: a playlist or concat file must not make it fetch URLs
# yt-dlp hands some streams to ffmpeg, which would connect past the address check: let it read nothing remote.
FFMPEG_DOWNLOAD_ARGS = {"ffmpeg_i": ["-protocol_whitelist", "file,crypto,data"]}

# Messages. Each says what happened and what the user can do; numbers are filled in where known.
UPLOAD_INSTEAD = "upload the file instead"
COOKIES_ADVICE = (
    "Download it yourself and upload the file here; the owner of this server can also set "
    f"{COOKIES_ENV} to a cookies file exported from a signed-in browser."
)
MSG_NOT_HTTP = "Only http:// and https:// links can be fetched. Paste the address of a video page or media file."
MSG_PRIVATE_ADDRESS = (
    "This link leads to a private or local network address ({address}), which this server does not fetch. "
    f"Paste a public link, or {UPLOAD_INSTEAD} "
    f"(a local install can allow such links with {ALLOW_PRIVATE_ENV}=1)."
)
MSG_UNREACHABLE = (
    "Could not reach {host}: the name does not resolve or the connection failed. "
    f"Check the link and the network, or {UPLOAD_INSTEAD}."
)
MSG_TIMEOUT = f"{{host}} did not answer in time. Try again later, or {UPLOAD_INSTEAD}."
MSG_HTTP = {
    403: "The site refused access to this link (HTTP 403 Forbidden); it may be private or blocked here.",
    404: "Nothing was found at this link (HTTP 404 Not Found). Check that the address is complete.",
    429: "The site is limiting how often this server may fetch (HTTP 429 Too Many Requests); wait a while.",
}
MSG_HTTP_OTHER = "The site answered with HTTP error {status}."
MSG_BOT_CHECK = f"YouTube wants this server to sign in to prove it is not a bot. {COOKIES_ADVICE}"
MSG_AGE = f"This video is age-restricted and YouTube only plays it to a signed-in account. {COOKIES_ADVICE}"
MSG_PRIVATE_VIDEO = "This video is private: only people its owner shared it with can play it. Upload it if you have it."
MSG_MEMBERS = "This video is for the channel's paying members only. Upload the file if you have access to it."
MSG_GEO = f"This video is not available in the country this server is in; {UPLOAD_INSTEAD}."
MSG_REMOVED = "This video is no longer available (removed, taken down, or its account was closed). Check the link."
MSG_LIVE = (
    "This is a live stream or a premiere that has not ended; only finished recordings can be transcribed. "
    "Try again when it is over."
)
MSG_UNSUPPORTED = (
    "No audio or video was found at this link, and yt-dlp does not know the site. Paste the link of the "
    f"video page itself or a direct link to a media file, or {UPLOAD_INSTEAD}."
)
MSG_NO_STREAM = f"No audio or video stream could be found behind this link. Check the link, or {UPLOAD_INSTEAD}."
MSG_PLAYLIST = "This link is a playlist, a channel or a page with several videos; paste the link of one video."
MSG_UNFETCHABLE = f"This video is only offered in a way this server cannot fetch; {UPLOAD_INSTEAD}."
MSG_EMPTY_DOWNLOAD = f"The link gave an empty file (0 bytes). Check the link, or {UPLOAD_INSTEAD}."
MSG_BROKEN_DOWNLOAD = f"The download broke off before the end of the file. Try again, or {UPLOAD_INSTEAD}."
MSG_NO_FILE = f"The download finished without a file. Try again, or {UPLOAD_INSTEAD}."
MSG_OTHER_URL = f"Could not get the audio from this link ({{reason}}). Check the link, or {UPLOAD_INSTEAD}."
MSG_MISSING_FILE = "No file was found at {path}. Check the path, or upload the file again."
MSG_EMPTY = "The {noun} is empty (0 bytes). Record, upload or link it again."
MSG_NOT_MEDIA = (
    "This file is not audio or video that can be read. Upload an audio or video file, "
    "for example MP3, M4A, WAV, FLAC, OGG, WebM or MP4."
)
MSG_NO_AUDIO = "This {noun} has no audio track, so there is nothing to transcribe."
MSG_CORRUPT = "This {noun} could not be decoded: it looks corrupt or cut short. Export or download it again."
MSG_TOO_LONG = "This {noun} is {length} long; the limit is {limit}. Cut it into parts of at most {limit}."
MSG_LONGER_THAN = "This {noun} is longer than the limit of {limit}. Cut it into parts of at most {limit}."
MSG_TOO_LARGE = "This {noun} is {size}; the limit is {limit}. Use a shorter or smaller file, or only its audio."
MSG_LARGER_THAN = "This {noun} is larger than the limit of {limit}. Use a shorter or smaller file, or only its audio."

# yt-dlp passes YouTube's own reasons on as text. Checked in this order: the bot check and the age gate both
# say "Sign in to confirm", and a private video says "Sign in if you've been granted access".
TEXT_CASES: list[tuple[str, str]] = [
    (r"not a bot", MSG_BOT_CHECK),
    (r"confirm your age|age-restricted|inappropriate for some users", MSG_AGE),
    (r"private video|video is private", MSG_PRIVATE_VIDEO),
    (r"members-only|channel's members", MSG_MEMBERS),
    (r"available in your country|geo.?restrict|from your location", MSG_GEO),
    (r"rate-limited|HTTP Error 429|Too Many Requests", MSG_HTTP[429]),
    (r"live event will begin|premieres in|not currently live|live stream", MSG_LIVE),
    (
        r"video unavailable|removed by the uploader|no longer available|account associated with this video"
        r"|copyright claim|terms of service|content isn.t available",
        MSG_REMOVED,
    ),
    (r"did not get any data blocks|downloaded file is empty", MSG_EMPTY_DOWNLOAD),
    (r"downloaded \d+ bytes, expected \d+ bytes|incomplete ?read", MSG_BROKEN_DOWNLOAD),
    (r"no video formats found|requested format is not available", MSG_NO_STREAM),
    (r"ffmpeg exited with code", MSG_UNFETCHABLE),  # a stream yt-dlp gave to ffmpeg, which may not fetch
]
UNREACHABLE = (
    r"name or service not known|temporary failure in name resolution|nodename nor servname|getaddrinfo"
    r"|no address associated|connection refused|network is unreachable|no route to host|connection reset"
)

Progress = Callable[[float, str], None]
log = logging.getLogger(__name__)


class MediaError(Exception):
    """A failure the user can act on; str(error) is the whole message, one line, shown as it is."""


@dataclass(frozen=True)
class Limits:
    """What one request may cost: seconds of audio, bytes of file, seconds of network silence."""

    max_duration_s: float = DEFAULT_MAX_DURATION_S
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls) -> Limits:
        """The deployment's limits: WHISPER_MAX_DURATION, WHISPER_MAX_BYTES, WHISPER_URL_TIMEOUT."""
        return cls(
            max_duration_s=environment.positive_number(MAX_DURATION_ENV, DEFAULT_MAX_DURATION_S),
            max_bytes=int(environment.positive_number(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)),
            timeout_s=environment.positive_number(TIMEOUT_ENV, DEFAULT_TIMEOUT_S),
        )


@dataclass(frozen=True, eq=False)
class Media:
    """The decoded signal and what is known about where it came from (None where nothing is)."""

    audio: np.ndarray  # float32, SAMPLE_RATE Hz, mono
    duration: float  # seconds of decoded audio
    title: str | None = None
    uploader: str | None = None
    thumbnail: str | None = None
    webpage_url: str | None = None
    extractor: str | None = None  # yt-dlp's name for the site, e.g. "Youtube" or "Generic"

    def metadata(self) -> dict[str, str | float | None]:
        """Everything but the signal, as plain JSON-able values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "audio"}


def is_url(text: str) -> bool:
    """True for an http(s) link; callers treat anything else as a file path."""
    return has_allowed_scheme(text.strip())


def load_file(path: str | os.PathLike[str], limits: Limits | None = None) -> Media:
    """Decode a local audio or video file (an upload or a microphone recording) to 16 kHz mono."""
    file = Path(path)
    if not file.is_file():
        raise MediaError(MSG_MISSING_FILE.format(path=file))
    return _decode(file.resolve(), limits or Limits.from_env(), noun="file")


def load_url(url: str, limits: Limits | None = None, progress: Progress | None = None) -> Media:
    """Fetch the audio of one video or media file behind an http(s) link and decode it.

    `progress(fraction, message)` follows the download. The link's files live in a temporary directory of
    their own under WHISPER_TEMP_DIR (default: the system's), removed before this returns or raises.
    """
    limits = limits or Limits.from_env()
    url = url.strip()
    if not is_url(url):
        raise MediaError(MSG_NOT_HTTP)
    root = Path(environment.text(TEMP_DIR_ENV) or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root))
    try:
        return _fetch(url, limits, progress or _no_progress, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def explain_download_error(error: BaseException, url: str) -> MediaError:
    """Turn what yt-dlp raised into a message that says what happened and what to do."""
    chain = list(_causes(error))
    blocked = next((e for e in chain if isinstance(e, BlockedAddressError)), None)
    if blocked is not None:
        return MediaError(MSG_PRIVATE_ADDRESS.format(address=blocked.address))
    # Addresses in the text (the link itself, yt-dlp's help links) must not match a case by accident.
    text = re.sub(r"https?://\S+", "", " ".join(str(e) for e in chain))
    for pattern, message in TEXT_CASES:
        if re.search(pattern, text, re.IGNORECASE):
            return MediaError(message)
    if any(isinstance(e, GeoRestrictedError) for e in chain):
        return MediaError(MSG_GEO)
    status = next((s for s in map(_http_status, chain) if s), None)
    if status is not None:
        message = MSG_HTTP.get(status) or MSG_HTTP_OTHER.format(status=status)
        return MediaError(f"{message} If you have the file, upload it instead.")
    if any(isinstance(e, UnsupportedError) for e in chain) or "Unsupported URL" in text:
        return MediaError(MSG_UNSUPPORTED)
    host = urllib.parse.urlsplit(url).hostname or url
    if any(isinstance(e, TimeoutError) for e in chain) or re.search(r"timed out", text, re.IGNORECASE):
        return MediaError(MSG_TIMEOUT.format(host=host))
    if any(isinstance(e, ConnectionError) for e in chain) or re.search(UNREACHABLE, text, re.IGNORECASE):
        return MediaError(MSG_UNREACHABLE.format(host=host))
    return MediaError(MSG_OTHER_URL.format(reason=_first_line(str(error))))


# --- links --------------------------------------------------------------------------------------------------


class _TooLarge(DownloadCancelled):
    """Raised from the progress hook: a download without Content-Length went past the byte limit."""


class _YtDlpLog:
    """yt-dlp's logger: its messages go to our debug log, never to stderr, and are kept to be read back
    (a download refused by max_filesize is reported only as a message)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def debug(self, message: str) -> None:
        self.lines.append(message)
        log.debug("yt-dlp: %s", message)

    info = warning = error = debug

    def oversize(self) -> int | None:
        """The size yt-dlp gave when it refused a download for max_filesize, else None."""
        for line in self.lines:
            found = re.search(r"larger than max-filesize \((\d+) bytes", line)
            if found:
                return int(found.group(1))
        return None


def _fetch(url: str, limits: Limits, progress: Progress, workdir: Path) -> Media:
    """Look the link up, refuse what the metadata rules out, download the audio into `workdir`, decode it."""
    ydl_log = _YtDlpLog()

    def hook(status: dict[str, Any]) -> None:
        done = status.get("downloaded_bytes") or 0
        if done > limits.max_bytes:
            raise _TooLarge(f"download passed {done} bytes")
        if status.get("status") == "downloading":
            total = status.get("total_bytes") or status.get("total_bytes_estimate")
            of_total = f" of {_size(total)}" if total else ""
            progress(min(done / total, 1.0) if total else 0.0, f"Downloading: {_size(done)}{of_total}")
        elif status.get("status") == "finished":
            progress(1.0, "Download finished")

    progress(0.0, "Looking up the link")
    try:
        with GuardedYoutubeDL(_ydl_params(limits, workdir, ydl_log, hook), default_policy()) as ydl:
            info = ydl.extract_info(url, download=False)
            _check_info(info, limits)
            info = ydl.process_ie_result(info, download=True)
    except _TooLarge as e:
        raise _too_large("video", None, limits) from e
    except (YoutubeDLError, OSError) as e:
        raise explain_download_error(e, url) from e
    downloads = info.get("requested_downloads") or [{}]
    path = Path(downloads[0].get("filepath") or workdir / "missing")
    if not path.is_file():
        size = ydl_log.oversize()
        raise _too_large("video", size, limits) if size else MediaError(MSG_NO_FILE)
    media = _decode(path, limits, noun="video")
    return dataclasses.replace(
        media,
        title=info.get("title") or media.title,
        uploader=info.get("uploader") or info.get("channel"),
        thumbnail=info.get("thumbnail"),
        webpage_url=info.get("webpage_url") or url,
        extractor=info.get("extractor_key") or info.get("extractor"),
    )


def _ydl_params(limits: Limits, workdir: Path, ydl_log: _YtDlpLog, hook: Callable) -> dict[str, Any]:
    """yt-dlp's options: the best audio of one video, bounded in time and size, every file in `workdir`."""
    params: dict[str, Any] = {
        "format": "bestaudio/best",
        "noplaylist": True,
        "extract_flat": "in_playlist",  # a playlist is refused: do not look up each of its entries first
        "logger": ydl_log,
        "quiet": True,
        "noprogress": True,
        "progress_hooks": [hook],
        "socket_timeout": limits.timeout_s,
        "retries": RETRIES,
        "fragment_retries": RETRIES,
        "extractor_retries": 1,
        "max_filesize": limits.max_bytes,
        "paths": {"home": str(workdir), "temp": str(workdir)},
        "outtmpl": {"default": "media.%(ext)s"},
        "cachedir": False,
        "proxy": "",  # connect directly: the address check must see the real destination
        "ffmpeg_location": ffmpeg_executable(),
        "external_downloader_args": FFMPEG_DOWNLOAD_ARGS,
        "fixup": "never",  # our decoder reads what yt-dlp would remux (MPEG-TS, fragmented MP4)
    }
    cookies = environment.text(COOKIES_ENV)
    if cookies and Path(cookies).is_file():
        # yt-dlp writes the jar back when it closes: each request gets its own copy.
        params["cookiefile"] = shutil.copy(cookies, workdir / "cookies.txt")
    elif cookies:
        log.warning("%s=%s is not a file; fetching without cookies", COOKIES_ENV, cookies)
    return params


def _check_info(info: dict[str, Any], limits: Limits) -> None:
    """Refuse before downloading what the metadata already rules out."""
    if info.get("_type") in ("playlist", "multi_video"):
        raise MediaError(MSG_PLAYLIST)
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise MediaError(MSG_LIVE)
    duration = info.get("duration")
    if duration and duration > limits.max_duration_s + DURATION_SLACK_S:
        raise _too_long("video", duration, limits)
    size = info.get("filesize") or info.get("filesize_approx")
    if size and size > limits.max_bytes:
        raise _too_large("video", size, limits)
    for chosen in info.get("requested_formats") or [info]:
        if not has_allowed_scheme(chosen.get("url") or ""):
            raise MediaError(MSG_UNFETCHABLE)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and all it wraps: yt-dlp keeps causes in exc_info and .cause, urllib in .reason."""
    seen: set[int] = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        exc_info = getattr(current, "exc_info", None)
        linked = [
            getattr(current, "cause", None),
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None,
        ]
        stack.extend(e for e in linked if isinstance(e, BaseException))


def _http_status(error: BaseException) -> int | None:
    """The HTTP status carried by yt-dlp's or urllib's HTTPError, or written in yt-dlp's message."""
    for name in ("status", "code"):
        value = getattr(error, name, None)
        if isinstance(value, int) and 400 <= value < 600:
            return value
    found = re.search(r"HTTP Error (\d{3})", str(error))
    return int(found.group(1)) if found else None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines() or ["no details"]
    return re.sub(r"^ERROR:\s*", "", lines[0].strip())[:200]


def _no_progress(fraction: float, message: str) -> None:
    pass


# --- files --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    """What ffmpeg says when it opens a file, before it decodes anything."""

    duration: float | None
    has_audio: bool
    title: str | None
    artist: str | None


def _probe(path: Path, noun: str) -> _Probe:
    """Open the file with ffmpeg and no output: it prints the container's duration and streams, then exits."""
    command = [
        ffmpeg_executable(),
        "-hide_banner",
        "-nostdin",
        "-protocol_whitelist",
        LOCAL_ONLY,
        "-i",
        str(path),
    ]
    try:
        text = subprocess.run(command, capture_output=True, timeout=PROBE_TIMEOUT_S).stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        raise MediaError(MSG_CORRUPT.format(noun=noun)) from e
    opening, found, info = text.partition("Input #0")
    if not found:
        corrupt = re.search(r"moov atom not found|truncat|end of file", opening, re.IGNORECASE)
        raise MediaError(MSG_CORRUPT.format(noun=noun) if corrupt else MSG_NOT_MEDIA)
    stamp = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", info)
    duration = int(stamp[1]) * 3600 + int(stamp[2]) * 60 + float(stamp[3]) if stamp else None
    container_part = info.split("Stream #", 1)[0]  # stream-level tags follow
    tags = {key.lower(): value.strip() for key, value in re.findall(r"^ {4}(\w+)\s*: (.*)$", container_part, re.M)}
    return _Probe(
        duration=duration,
        has_audio=re.search(r"Stream #\S+.*: Audio:", info) is not None,
        title=tags.get("title") or None,
        artist=tags.get("artist") or None,
    )


def _decode(path: Path, limits: Limits, noun: str) -> Media:
    """Check size and the length ffmpeg reports, then decode at most a little past the limit and check the
    length again (some files, browser recordings among them, carry no duration)."""
    size = path.stat().st_size
    if size == 0:
        raise MediaError(MSG_EMPTY.format(noun=noun))
    if size > limits.max_bytes:
        raise _too_large(noun, size, limits)
    probe = _probe(path, noun)
    if not probe.has_audio:
        raise MediaError(MSG_NO_AUDIO.format(noun=noun))
    if probe.duration and probe.duration > limits.max_duration_s + DURATION_SLACK_S:
        raise _too_long(noun, probe.duration, limits)
    stream = ffmpeg.input(str(path), protocol_whitelist=LOCAL_ONLY).output(
        "pipe:",
        format="f32le",
        acodec="pcm_f32le",
        ac=1,
        ar=SAMPLE_RATE,
        map="0:a:0",
        t=limits.max_duration_s + 2 * DURATION_SLACK_S,
    )
    try:
        out, _ = stream.run(cmd=[ffmpeg_executable(), "-nostdin"], capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as e:
        log.debug("ffmpeg could not decode %s: %s", path, e.stderr.decode(errors="replace")[-2000:])
        raise MediaError(MSG_CORRUPT.format(noun=noun)) from e
    audio = np.frombuffer(out, np.float32).copy()
    if audio.size == 0:
        raise MediaError(MSG_CORRUPT.format(noun=noun))
    duration = audio.size / SAMPLE_RATE
    if duration > limits.max_duration_s + DURATION_SLACK_S:
        raise _too_long(noun, None, limits)
    return Media(audio=audio, duration=duration, title=probe.title or path.stem, uploader=probe.artist)


# --- numbers in messages ------------------------------------------------------------------------------------


def _too_long(noun: str, duration: float | None, limits: Limits) -> MediaError:
    limit = clock(limits.max_duration_s)
    if duration is None:
        return MediaError(MSG_LONGER_THAN.format(noun=noun, limit=limit))
    return MediaError(MSG_TOO_LONG.format(noun=noun, length=clock(duration), limit=limit))


def _too_large(noun: str, size: int | None, limits: Limits) -> MediaError:
    limit = _size(limits.max_bytes)
    if size is None:
        return MediaError(MSG_LARGER_THAN.format(noun=noun, limit=limit))
    return MediaError(MSG_TOO_LARGE.format(noun=noun, size=_size(size), limit=limit))


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"
