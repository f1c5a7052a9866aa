"""Media intake, for real: files made with ffmpeg from the shared speech, links served by a threaded HTTP
server on 127.0.0.1 and fetched by yt-dlp, and YouTube's failures as yt-dlp words them (tests/fixtures)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from media_server import MediaServer
from yt_dlp.utils import DownloadError

from whisper_core.audio import SAMPLE_RATE, ffmpeg_executable, load_audio
from whisper_core.media import (
    Limits,
    Media,
    MediaError,
    explain_download_error,
    is_url,
    load_file,
    load_url,
)

SPEECH = "en_librispeech_1272-128104-0000.wav"  # 5.86 s, 16 kHz mono
STEREO = "en_jfk_ask_not.flac"  # 11 s, 44.1 kHz stereo
FIXTURES = Path(__file__).parent / "fixtures" / "yt_dlp_errors"
URL_LIMITS = Limits(max_duration_s=60, max_bytes=10_000_000, timeout_s=2)
# Made from the speech file: name -> ffmpeg arguments between the inputs and the output file.
FORMATS = {
    "speech.m4a": ["-c:a", "aac", "-b:a", "96k"],
    "speech.webm": ["-c:a", "libopus", "-b:a", "64k"],
    "speech.opus": ["-c:a", "libopus", "-b:a", "64k"],
    "speech.ogg": ["-c:a", "libvorbis", "-q:a", "5"],
    "speech.mp3": ["-c:a", "libmp3lame", "-b:a", "96k"],
    "speech.flac": ["-c:a", "flac"],
    "speech_8k.wav": ["-ar", "8000", "-c:a", "pcm_s16le"],
    "speech_u8.wav": ["-c:a", "pcm_u8"],
    "speech_24bit_44k_stereo.wav": ["-ar", "44100", "-ac", "2", "-c:a", "pcm_s24le"],
    "speech_32bit_48k.wav": ["-ar", "48000", "-c:a", "pcm_s32le"],
    "speech.aiff": ["-c:a", "pcm_s16be"],
}
VIDEO = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10"]
VIDEO_FORMATS = {  # a test-pattern picture with the speech as its audio track
    "speech.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"],
    "speech.mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "libvorbis"],
    "speech.mov": ["-c:v", "mpeg4", "-c:a", "aac"],
}


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_executable(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args], check=True)


def similarity(a: np.ndarray, b: np.ndarray, max_lag: int = 1600) -> float:
    """Peak normalised cross-correlation within ±0.1 s: codecs may shift the signal by a few samples."""
    n = min(a.size, b.size)
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    size = 1 << (2 * n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    peak = max(xc[: max_lag + 1].max(), xc[-max_lag:].max())
    return float(peak / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="session")
def speech(shared: Path) -> Path:
    return shared / "audio" / SPEECH


@pytest.fixture(scope="session")
def speech_duration(manifest: list[dict]) -> float:
    return next(item["duration_s"] for item in manifest if item["file"] == SPEECH)


@pytest.fixture(scope="session")
def reference(speech: Path) -> np.ndarray:
    return load_audio(str(speech))


@pytest.fixture(scope="session")
def made(tmp_path_factory: pytest.TempPathFactory, speech: Path) -> dict[str, Path]:
    """Every file the tests need, good and bad, made once with ffmpeg from the speech file."""
    out = tmp_path_factory.mktemp("made")
    files = {"speech.wav": speech}
    for name, args in FORMATS.items():
        ffmpeg("-i", str(speech), *args, str(out / name))
        files[name] = out / name
    for name, args in VIDEO_FORMATS.items():
        ffmpeg(*VIDEO, "-i", str(speech), "-shortest", *args, str(out / name))
        files[name] = out / name
    ffmpeg(*VIDEO, "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", str(out / "silent_video.mp4"))
    # A browser's MediaRecorder writes WebM without a duration; a non-seekable output does the same here.
    recording = subprocess.run(
        [ffmpeg_executable(), "-v", "error", "-i", str(speech), "-c:a", "libopus", "-f", "webm", "pipe:1"],
        check=True,
        capture_output=True,
    ).stdout
    (out / "recording.webm").write_bytes(recording)
    # Five hours of silence: one minute encoded, then its packets repeated without re-encoding.
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=8000:cl=mono",
        "-t",
        "60",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "8k",
        str(out / "minute.mp3"),
    )
    ffmpeg("-stream_loop", "299", "-i", str(out / "minute.mp3"), "-c", "copy", str(out / "five_hours.mp3"))
    # HLS, plain and AES-128 encrypted (the key is served beside the segments).
    (out / "hls.key").write_bytes(b"0123456789abcdef")
    (out / "keyinfo").write_text(f"hls.key\n{out / 'hls.key'}\n")
    hls = ["-c:a", "aac", "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"]
    ffmpeg("-i", str(speech), *hls, "-hls_segment_filename", str(out / "plain%d.ts"), str(out / "plain.m3u8"))
    aes = ["-hls_key_info_file", str(out / "keyinfo"), "-hls_segment_filename", str(out / "aes%d.ts")]
    ffmpeg("-i", str(speech), *hls, *aes, str(out / "aes.m3u8"))
    (out / "notes.mp3").write_text("These are meeting notes, not audio.\n" * 50)
    (out / "empty.wav").write_bytes(b"")
    for name in ("speech.mp3", "speech.wav", "speech.m4a"):
        data = files[name].read_bytes()
        (out / f"half_{name}").write_bytes(data[: len(data) // 2])
    files.update({p.name: p for p in out.iterdir() if p.name not in files})
    return files


# --- files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["speech.wav", *FORMATS, *VIDEO_FORMATS])
def test_each_format_decodes_to_16k_mono(made, name, reference, speech_duration):
    media = load_file(made[name])
    assert media.audio.dtype == np.float32 and media.audio.ndim == 1
    assert abs(media.duration - speech_duration) < 0.1
    assert media.duration == media.audio.size / SAMPLE_RATE
    # 8 kHz keeps only the band below 4 kHz, most of speech's energy; the rest are near copies.
    assert similarity(media.audio, reference) > (0.85 if "8k" in name else 0.97)
    assert media.title == made[name].stem and media.extractor is None


def test_stereo_44k_is_mixed_to_mono(shared, manifest):
    path = shared / "audio" / STEREO
    media = load_file(path)
    expected = next(item["duration_s"] for item in manifest if item["file"] == STEREO)
    assert abs(media.duration - expected) < 0.05
    assert similarity(media.audio, load_audio(str(path))) > 0.99


def test_text_file_named_mp3_is_not_media(made):
    with pytest.raises(MediaError, match=r"^This file is not audio or video that can be read\. Upload an audio"):
        load_file(made["notes.mp3"])


def test_video_without_audio_track(made):
    with pytest.raises(MediaError, match=r"^This file has no audio track, so there is nothing to transcribe\.$"):
        load_file(made["silent_video.mp4"])


def test_empty_file(made):
    with pytest.raises(MediaError, match=r"^The file is empty \(0 bytes\)\. Record, upload or link it again\.$"):
        load_file(made["empty.wav"])


@pytest.mark.parametrize("name", ["half_speech.mp3", "half_speech.wav"])
def test_truncated_mp3_and_wav_decode_what_is_there(made, name, reference, speech_duration):
    """MP3 is a run of independent frames and WAV a header before raw samples: the first half plays."""
    media = load_file(made[name])
    assert abs(media.duration - speech_duration / 2) < 0.3
    assert similarity(media.audio, reference[: media.audio.size]) > 0.97


def test_truncated_m4a_is_corrupt(made):
    """MP4's index (moov) is written at the end: without it nothing can be decoded."""
    with pytest.raises(MediaError, match=r"^This file could not be decoded: it looks corrupt or cut short\."):
        load_file(made["half_speech.m4a"])


def test_five_hour_file_is_refused_before_decoding(made):
    start = time.monotonic()
    with pytest.raises(MediaError, match=r"^This file is 5:00:\d\d long; the limit is 1:00:00\. Cut it into"):
        load_file(made["five_hours.mp3"], Limits())
    assert time.monotonic() - start < 1.5


def test_recording_without_duration_is_limited_after_decoding(made, speech_duration):
    media = load_file(made["recording.webm"])
    assert abs(media.duration - speech_duration) < 0.1
    with pytest.raises(MediaError, match=r"^This file is longer than the limit of 0:03\. Cut it into parts"):
        load_file(made["recording.webm"], Limits(max_duration_s=3))


def test_file_over_the_byte_limit(made):
    with pytest.raises(MediaError, match=r"^This file is 187\.4 kB; the limit is 1\.0 kB\."):
        load_file(made["speech.wav"], Limits(max_bytes=1000))


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match=r"^No file was found at .*nothing\.wav\. Check the path"):
        load_file(tmp_path / "nothing.wav")


def test_limits_from_env(monkeypatch):
    for name in ("WHISPER_MAX_DURATION", "WHISPER_MAX_BYTES", "WHISPER_URL_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert Limits.from_env() == Limits(max_duration_s=3600.0, max_bytes=1_000_000_000, timeout_s=20.0)
    monkeypatch.setenv("WHISPER_MAX_DURATION", "90")
    monkeypatch.setenv("WHISPER_MAX_BYTES", "5e6")
    monkeypatch.setenv("WHISPER_URL_TIMEOUT", "3.5")
    assert Limits.from_env() == Limits(max_duration_s=90.0, max_bytes=5_000_000, timeout_s=3.5)
    monkeypatch.setenv("WHISPER_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="WHISPER_MAX_BYTES must be a number"):
        Limits.from_env()


def test_metadata_is_plain_json(made):
    media = load_file(made["speech.flac"])
    assert json.loads(json.dumps(media.metadata())) == media.metadata()
    assert "audio" not in media.metadata()


def test_is_url():
    assert is_url("https://www.youtube.com/watch?v=jNQXAC9IVRw") and is_url(" http://example.com/a.mp3 ")
    assert not any(map(is_url, ["clip.mp3", "/tmp/a.wav", "file:///etc/passwd", "ytsearch:cats", "ftp://x/y"]))


# --- links --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(made):
    served = {name: made[name] for name in [*FORMATS, *VIDEO_FORMATS, "speech.wav", "silent_video.mp4"]}
    served.update({"notes.mp3": made["notes.mp3"], "empty.wav": made["empty.wav"]})
    served["truncated.m4a"] = made["half_speech.m4a"]
    served.update({name: path for name, path in made.items() if name.startswith(("plain", "aes", "hls."))})
    srv = MediaServer(served)
    media_url = srv.url("/media/speech.mp4")
    srv.pages["video.html"] = f'<html><head><title>A talk</title></head><body><video src="{media_url}"></video>'
    srv.pages["og.html"] = (
        '<html><head><meta property="og:title" content="Talk on a page">'
        f'<meta property="og:video" content="{srv.url("/media/speech.m4a")}"></head><body>Hello</body></html>'
    )
    srv.pages["two.html"] = (
        f'<html><head><title>Two</title></head><body><video src="{media_url}"></video>'
        f'<audio src="{srv.url("/media/speech.mp3")}"></audio></body></html>'
    )
    srv.pages["text.html"] = "<html><head><title>Just words</title></head><body>No media here.</body></html>"
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def other_loopback(made):
    """A second server on 127.0.0.2, the target of a redirect."""
    srv = MediaServer({"speech.wav": made["speech.wav"]}, host="127.0.0.2")
    yield srv
    srv.close()


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "url-temp"
    monkeypatch.setenv("WHISPER_TEMP_DIR", str(root))
    return root


@pytest.fixture
def fetch(temp_root, monkeypatch):
    """load_url with private addresses allowed, checking that the temporary root is empty afterwards."""
    monkeypatch.setenv("WHISPER_ALLOW_PRIVATE_URLS", "1")

    def run(url: str, limits: Limits = URL_LIMITS, progress=None) -> Media:
        try:
            return load_url(url, limits, progress)
        finally:
            assert not temp_root.exists() or not any(temp_root.iterdir()), "the temporary directory was left"

    return run


@pytest.mark.parametrize("name", ["speech.wav", "speech.m4a", "speech.webm", "speech.mp4", "speech_8k.wav"])
def test_direct_link_downloads_and_normalizes(fetch, server, made, temp_root, name, speech_duration):
    steps: list[tuple[float, str, int]] = []
    url = server.url(f"/media/{name}")
    media = fetch(url, progress=lambda f, m: steps.append((f, m, len(list(temp_root.iterdir())))))
    assert abs(media.duration - speech_duration) < 0.1
    assert similarity(media.audio, load_audio(str(made[name]))) > 0.99
    assert (media.title, media.extractor, media.webpage_url) == (Path(name).stem, "Generic", url)
    fractions = [f for f, _, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(0 <= f <= 1 for f in fractions)
    assert {n for _, _, n in steps} == {1}, "the download should live in one directory under the temp root"


def test_link_without_content_length(fetch, server, speech_duration):
    assert abs(fetch(server.url("/nolength/speech.wav")).duration - speech_duration) < 0.1


def test_page_with_a_video_element(fetch, server, speech_duration):
    media = fetch(server.url("/page/video.html"))
    assert abs(media.duration - speech_duration) < 0.1
    assert media.extractor == "HTML5MediaEmbed" and media.title.startswith("A talk")


def test_page_with_og_video(fetch, server, speech_duration):
    media = fetch(server.url("/page/og.html"))
    assert abs(media.duration - speech_duration) < 0.1
    assert media.extractor == "Generic" and media.title == "Talk on a page"


def test_redirect_to_another_loopback_address_when_allowed(fetch, server, other_loopback, speech_duration):
    target = other_loopback.url("/media/speech.wav")
    media = fetch(server.url(f"/redirect?to={target}"))
    assert abs(media.duration - speech_duration) < 0.1
    assert "/media/speech.wav" in other_loopback.requests


def test_loopback_link_is_refused_without_opt_in(server, temp_root, monkeypatch):
    monkeypatch.delenv("WHISPER_ALLOW_PRIVATE_URLS", raising=False)
    before = len(server.requests)
    with pytest.raises(MediaError, match=r"^This link leads to a private or local network address \(127\.0\.0\.1\)"):
        load_url(server.url("/media/speech.wav"), URL_LIMITS)
    assert len(server.requests) == before, "the guard must refuse before connecting"
    assert not any(temp_root.iterdir())


def test_host_name_resolving_to_loopback_is_refused(server, temp_root, monkeypatch):
    monkeypatch.delenv("WHISPER_ALLOW_PRIVATE_URLS", raising=False)
    url = server.url("/media/speech.wav").replace("127.0.0.1", "localhost")
    with pytest.raises(MediaError, match=r"private or local network address \((127\.0\.0\.1|::1)\)"):
        load_url(url, URL_LIMITS)
    assert not any(temp_root.iterdir())


BAD_LINKS = [  # path, limits, the start of the message
    ("/status/404", URL_LIMITS, r"Nothing was found at this link \(HTTP 404 Not Found\)"),
    ("/status/403", URL_LIMITS, r"The site refused access to this link \(HTTP 403 Forbidden\)"),
    ("/status/429", URL_LIMITS, r"The site is limiting how often this server may fetch \(HTTP 429"),
    ("/slow", Limits(timeout_s=1), r"127\.0\.0\.1 did not answer in time\. Try again later"),
    ("/cut/speech.wav", URL_LIMITS, r"The download broke off before the end of the file\."),
    ("/media/truncated.m4a", URL_LIMITS, r"This video could not be decoded: it looks corrupt or cut short\."),
    ("/media/notes.mp3", URL_LIMITS, r"This file is not audio or video that can be read\."),
    ("/media/empty.wav", URL_LIMITS, r"The link gave an empty file \(0 bytes\)\."),
    (
        "/media/silent_video.mp4",
        URL_LIMITS,
        r"This video has no audio track, so there is nothing to transcribe\.",
    ),
    (
        "/page/text.html",
        URL_LIMITS,
        r"No audio or video was found at this link, and yt-dlp does not know the site",
    ),
    ("/page/two.html", URL_LIMITS, r"This link is a playlist, .*; paste the link of one video\."),
    ("/media/speech.wav", Limits(max_bytes=100_000), r"This video is 187\.4 kB; the limit is 100\.0 kB\."),
    (
        "/nolength/speech.wav",
        Limits(max_bytes=100_000),
        r"This video is larger than the limit of 100\.0 kB\.",
    ),
    ("/media/speech.wav", Limits(max_duration_s=3), r"This video is 0:05 long; the limit is 0:03\."),  # 5.86 s, cut
]


def test_hls_stream_is_fetched_by_yt_dlp_itself(fetch, server, speech_duration):
    media = fetch(server.url("/media/plain.m3u8"))
    assert abs(media.duration - speech_duration) < 0.2
    assert {"/media/plain0.ts", "/media/plain1.ts", "/media/plain2.ts"} <= set(server.requests)


def test_ffmpeg_never_fetches_a_stream_itself(fetch, server, tmp_path, monkeypatch, speech_duration):
    """Without pycryptodomex, yt-dlp hands AES-128 HLS to ffmpeg when one is on PATH; ffmpeg would connect
    past the address check, so it is allowed local files only and the link fails instead."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ffmpeg").symlink_to(ffmpeg_executable())
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    before = len(server.requests)
    try:
        media = fetch(server.url("/media/aes.m3u8"))
    except MediaError as error:
        assert str(error).startswith("This video is only offered in a way this server cannot fetch")
        assert not [p for p in server.requests[before:] if p.endswith((".ts", ".key"))]
    else:  # pycryptodomex is installed
        assert abs(media.duration - speech_duration) < 0.2


def test_nothing_is_written_to_stdout_or_stderr(fetch, server, capfd):
    fetch(server.url("/media/speech.mp3"))
    with pytest.raises(MediaError):
        fetch(server.url("/status/404"))
    assert capfd.readouterr() == ("", "")


def test_cookies_file_is_sent_from_a_copy(fetch, server, tmp_path, monkeypatch):
    jar = tmp_path / "cookies.txt"
    jar.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc123\n")
    before = jar.read_text()
    monkeypatch.setenv("WHISPER_YTDLP_COOKIES", str(jar))
    start = len(server.requests)
    fetch(server.url("/media/speech.mp3"))
    assert "session=abc123" in server.cookies[start:]
    assert jar.read_text() == before, "yt-dlp saves its jar on exit: it must write to the request's copy"


@pytest.mark.parametrize(("path", "limits", "message"), BAD_LINKS, ids=[f"{p} {m[:24]}" for p, _, m in BAD_LINKS])
def test_bad_link(fetch, server, path, limits, message):
    start = time.monotonic()
    with pytest.raises(MediaError, match="^" + message):
        fetch(server.url(path), limits)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "data:audio/wav;base64,UklGRg==", "ytsearch:speech", "ftp://127.0.0.1/a.mp3"],
)
def test_only_http_links_are_fetched(fetch, url):
    with pytest.raises(MediaError, match=r"^Only http:// and https:// links can be fetched\."):
        fetch(url)


def test_youtube_fails_fast_when_youtube_cannot_be_reached(fetch):
    """Where DNS does not resolve outside hosts, the link fails within seconds with advice, not a traceback.
    On a machine that can resolve YouTube the test stays offline and skips instead of contacting it."""
    try:
        socket.getaddrinfo("www.youtube.com", 443)
    except OSError:
        pass
    else:
        pytest.skip("www.youtube.com resolves here; the offline failure is not tested against the real site")
    start = time.monotonic()
    with pytest.raises(MediaError, match=r"^Could not reach www\.youtube\.com: .* upload the file instead\.$"):
        fetch("https://www.youtube.com/watch?v=jNQXAC9IVRw", Limits(timeout_s=2))
    assert time.monotonic() - start < 10


# --- YouTube's failures, as yt-dlp words them ---------------------------------------------------------------

YOUTUBE_CASES = {  # fixture file -> the start of our message
    "bot_check.txt": r"YouTube wants this server to sign in to prove it is not a bot\. .*_COOKIES",
    "age_restricted.txt": r"This video is age-restricted .*WHISPER_YTDLP_COOKIES",
    "private.txt": r"This video is private",
    "members_only.txt": r"This video is for the channel's paying members only",
    "members_level.txt": r"This video is for the channel's paying members only",
    "geo_blocked.txt": r"This video is not available in the country this server is in",
    "removed_by_uploader.txt": r"This video is no longer available",
    "account_terminated.txt": r"This video is no longer available",
    "copyright_claim.txt": r"This video is no longer available",
    "unavailable.txt": r"This video is no longer available",
    "upcoming_live.txt": r"This is a live stream or a premiere that has not ended",
    "premiere.txt": r"This is a live stream or a premiere that has not ended",
    "rate_limited_session.txt": r"The site is limiting how often this server may fetch",
    "http_429.txt": r"The site is limiting how often this server may fetch \(HTTP 429",
    "http_403_download.txt": r"The site refused access to this link \(HTTP 403 Forbidden\)",
    "http_404.txt": r"Nothing was found at this link \(HTTP 404 Not Found\)",
    "dns_failure.txt": r"Could not reach www\.youtube\.com",
    "read_timeout.txt": r"www\.youtube\.com did not answer in time",
    "unsupported_url.txt": r"No audio or video was found at this link",
    "no_formats.txt": r"No audio or video stream could be found behind this link",
}


def test_every_fixture_has_a_case():
    assert sorted(p.name for p in FIXTURES.glob("*.txt")) == sorted(YOUTUBE_CASES)


@pytest.mark.parametrize("name", sorted(YOUTUBE_CASES))
def test_youtube_failure_is_explained(name):
    text = (FIXTURES / name).read_text(encoding="utf-8").strip()
    message = str(explain_download_error(DownloadError(text), "https://www.youtube.com/watch?v=jNQXAC9IVRw"))
    assert re.match(YOUTUBE_CASES[name], message), message
    assert "\n" not in message and "Traceback" not in message and "--cookies" not in message
