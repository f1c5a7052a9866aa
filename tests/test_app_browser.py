"""The page in a real headless Chromium, as a user meets it: upload, video, microphone, link, examples,
errors, a full queue, a phone-sized screen and dark mode. Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path

import pytest
from app_server import ROOT, AppServer, make_media
from conftest import shared_dir
from media_server import MediaServer

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
RESULT_TIMEOUT_MS = 120_000
QUEUE_SIZE = 2  # small, so that a test can fill the queue
CONCURRENCY = 2
LIVE_SPEECH_S = 25  # seconds of French the fake microphone plays into the live captions
# Words from the start, middle and end of those 25 s that live decodes of it write (most of them, whatever
# a decode makes of the rest: "smartone", "l'identque"); a text that stops early lacks most of them.
LIVE_FRENCH_WORDS = ("jamais", "formulée", "force", "photo", "évidemment", "interfaces", "souvent", "ordinateurs")
LIVE_ENGLISH_WORDS = ("never", "smartphone", "interact", "obviously", "interfaces", "often", "computers", "click")
LIVE_WORDS_MISSED = 3  # of each list: a text cut after its first sentences misses five or more


def _require_browser() -> None:
    missing = [what for what, ok in (("Chromium at /usr/bin/chromium", CHROMIUM.is_file()),
                                     ("the playwright package", importlib.util.find_spec("playwright")))
               if not ok]
    if missing:
        reason = f"browser tests need {' and '.join(missing)} (apt-get install chromium; pip install playwright)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def audio() -> Path:
    _require_browser()
    return shared_dir() / "audio"


@pytest.fixture(scope="module")
def app(tmp_path_factory, audio):
    server = AppServer(tmp_path_factory.mktemp("app-browser"), WHISPER_CONCURRENCY=str(CONCURRENCY),
                       WHISPER_QUEUE_SIZE=str(QUEUE_SIZE)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def playwright(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
    yield browser
    browser.close()


def open_page(browser, app, *, width: int = 1280, query: str = "", **context_options):
    context = browser.new_context(viewport={"width": width, "height": 900}, **context_options)
    page = context.new_page()
    page.goto(app.url + query)
    page.locator("#url-box").wait_for()
    return page


@pytest.fixture
def page(browser, app):
    page = open_page(browser, app)
    yield page
    page.context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(400)  # let toasts and the progress overlay finish their transitions
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def upload(page, path: Path) -> None:
    """Choose the file, wait until the browser has sent it (the name shows before that), press Transcribe."""
    page.get_by_role("tab", name="Upload").click()
    with page.expect_response(lambda r: "/gradio_api/upload" in r.url and r.status == 200):
        page.locator("#upload input[type=file]").set_input_files(path)
    page.locator("#upload").get_by_text(path.stem).wait_for()
    page.click("#upload-button")


def wait_for_results(page) -> None:
    """The downloads appear with the last update of a run."""
    page.locator("#downloads").get_by_text(".srt").first.wait_for(timeout=RESULT_TIMEOUT_MS)


def table(page) -> list[list[str]]:
    """The results table's cells, row by row (header excluded)."""
    cells = page.eval_on_selector_all(
        "#results-table [data-testid^='cell-']",
        "cells => cells.map(c => [c.dataset.testid, c.innerText.trim()])",
    )
    rows: dict[int, dict[int, str]] = {}
    for testid, text in cells:
        row, col = map(int, testid.split("-")[1:3])
        rows.setdefault(row, {})[col] = text
    return [[rows[r][c] for c in sorted(rows[r])] for r in sorted(rows)]


def assert_no_raw_output(page) -> None:
    text = page.locator("body").inner_text()
    for raw in ("Traceback", "Exception", "{'", "[{", "None", "<class"):
        assert raw not in text, f"{raw!r} is on screen"


def check_french(rows: list[list[str]]) -> None:
    transcript = " ".join(r[1] for r in rows).lower()
    english = " ".join(r[2] for r in rows).lower()
    assert "consulat" in transcript, rows
    assert "consul" in english or "console" in english, rows  # base: "Under the console, it becomes ..."


def test_upload_french_speech_fills_both_columns(page, audio):
    upload(page, audio / "fr_sous_le_consulat.wav")
    wait_for_results(page)
    rows = table(page)
    check_french(rows)
    assert re.fullmatch(r"0:00–0:0[56]", rows[0][0])  # the sentence ends at 5.x s by its words, 6 s by its tokens
    assert re.search(r"Detected language: French 100% · \w+", page.locator("#language-line").inner_text())
    assert "fr_sous_le_consulat" in page.locator("#source-card").inner_text()
    downloads = page.eval_on_selector_all("#downloads a[download]", "links => links.map(a => a.download)")
    for name in ("fr_sous_le_consulat.fr.srt", "fr_sous_le_consulat.en.vtt", "fr_sous_le_consulat.fr-en.srt",
                 "fr_sous_le_consulat.fr.words.srt"):
        assert name in downloads
    bilingual = page.locator("#downloads a[download='fr_sous_le_consulat.fr-en.srt']").get_attribute("href")
    srt = page.request.get(bilingual)
    assert srt.ok and re.search(r"^Sous le consulat.*\nUnder the con", srt.text(), re.M), srt.text()
    player = page.request.get(page.eval_on_selector("#player audio", "a => a.src"))
    assert player.ok and player.headers["content-type"] == "audio/mpeg"
    assert_no_raw_output(page)
    shot(page, "upload_french")


def test_example_runs_with_one_click_a_row_plays_from_its_start_and_the_language_can_be_changed(page):
    page.get_by_role("tab", name="Upload").click()
    page.get_by_text("Spanish: booking a table").click()
    wait_for_results(page)
    rows = table(page)
    assert len(rows) >= 2 and "mesa" in " ".join(r[1] for r in rows).lower(), rows
    assert "Transcript (Spanish)" in page.locator("#results-table thead").inner_text()
    last = len(rows) - 1
    start = sum(int(x) * 60 ** i for i, x in enumerate(reversed(rows[last][0].split("–")[0].split(":"))))
    assert start > 0
    page.get_by_test_id(f"cell-{last}-1").click()
    page.wait_for_function("() => { const a = document.querySelector('#player audio');"
                           " return a && !a.paused && a.currentTime > 0; }", timeout=10_000)
    position = page.eval_on_selector("#player audio", "a => a.currentTime")
    assert start <= position < start + 3, (start, position)
    shot(page, "example_spanish_playing")
    picker = page.locator("#language input")  # a language picked after a run runs it again
    picker.click()
    picker.fill("Portuguese")
    page.get_by_role("option", name="Portuguese").click()
    page.locator("#language-line").get_by_text("Language: Portuguese (chosen, not detected)").wait_for(
        timeout=RESULT_TIMEOUT_MS)
    assert "Transcript (Portuguese)" in page.locator("#results-table").inner_text()
    shot(page, "language_override")


def test_rows_appear_window_by_window(page, audio, tmp_path):
    """45 s of English read aloud is two windows: the first window's rows are on screen, and the progress
    says which window is decoding, before the run ends."""
    speech = make_media(tmp_path, ["-i", str(audio / "en_ljspeech_printing_longform.ogg"), "-t", "45",
                                   "reading.mp3"])
    upload(page, speech)
    page.get_by_test_id("cell-0-1").wait_for(timeout=RESULT_TIMEOUT_MS)
    assert not page.locator("#downloads").is_visible(), "the run had already ended: nothing was streamed"
    page.locator("#language-line").get_by_text(re.compile(r"Transcribing and translating: window 2 of 2")).wait_for()
    wait_for_results(page)
    assert table(page)[-1][0].endswith(("0:44", "0:45"))
    shot(page, "two_windows")


def _seconds(clock: str) -> int:
    return sum(int(x) * 60 ** i for i, x in enumerate(reversed(clock.split(":"))))


def test_batched_decoding_from_the_options(page, audio, tmp_path):
    """Ticked under Options, the speech is cut at its pauses and decoded at once; the rows are in time
    order and reach the end of the recording."""
    speech = make_media(tmp_path, ["-i", str(audio / "en_ljspeech_printing_longform.ogg"), "-t", "70",
                                   "reading70.mp3"])
    page.get_by_text("Options").click()
    page.locator("#batched input[type=checkbox]").check()
    upload(page, speech)
    wait_for_results(page)
    rows = table(page)
    starts = [_seconds(r[0].split("–")[0]) for r in rows]
    assert starts == sorted(starts) and _seconds(rows[-1][0].split("–")[1]) >= 65, rows
    transcript = " ".join(r[1] for r in rows).lower()
    assert "printing" in transcript and "movable" in transcript, rows
    assert_no_raw_output(page)
    shot(page, "batched")


def test_two_files_at_once_give_two_results_and_a_zip(page, audio):
    import io
    import zipfile

    files = [audio / "fr_sous_le_consulat.wav", audio / "es_arenas_blanquecinas.wav"]
    page.get_by_role("tab", name="Upload").click()
    with page.expect_response(lambda r: "/gradio_api/upload" in r.url and r.status == 200):
        page.locator("#upload input[type=file]").set_input_files(files)
    page.locator("#upload").get_by_text(files[1].stem).wait_for()
    page.click("#upload-button")
    page.locator("#downloads a[download='subtitles.zip']").wait_for(timeout=RESULT_TIMEOUT_MS)
    assert "mesa" not in " ".join(r[1] for r in table(page)).lower()
    assert "arenas" in " ".join(r[1] for r in table(page)).lower()  # the last file is shown
    page.locator("#file-picker").get_by_text("1. fr_sous_le_consulat.wav").click()
    page.locator("#source-card").get_by_text("fr_sous_le_consulat").wait_for()
    check_french(table(page))
    assert "French" in page.locator("#language-line").inner_text()
    link = page.locator("#downloads a[download='subtitles.zip']").get_attribute("href")
    names = zipfile.ZipFile(io.BytesIO(page.request.get(link).body())).namelist()
    for name in ("fr_sous_le_consulat.fr.srt", "es_arenas_blanquecinas.es.srt", "es_arenas_blanquecinas.en.srt"):
        assert name in names, names
    assert_no_raw_output(page)
    shot(page, "two_files")


def test_upload_video_with_speech(page, audio, tmp_path):
    video = make_media(tmp_path, ["-f", "lavfi", "-i", "color=c=navy:s=320x240:r=10", "-i",
                                  str(audio / "en_jfk_ask_not.flac"), "-shortest", "-c:v", "libx264", "-c:a",
                                  "aac", "-pix_fmt", "yuv420p", "jfk_speech.mp4"])
    upload(page, video)
    wait_for_results(page)
    rows = table(page)
    assert "ask not what your country can do for you" in " ".join(r[1] for r in rows).lower(), rows
    assert all(r[2] == "(already English)" for r in rows)
    assert "The speech is English" in page.locator("#language-line").inner_text()
    shot(page, "upload_video")


def microphone_playing(playwright, speech: Path):
    """A Chromium whose microphone plays `speech` once, from the moment recording starts."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
        *FLAGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech}%noloop"])


def test_live_captions_while_the_speaker_talks(playwright, app, audio, tmp_path):
    """French from the microphone: committed rows and a greyed tentative tail appear before the speech
    ends; Stop gives the whole table in both columns, the player and the downloads."""
    speech = make_media(tmp_path, ["-i", str(audio / "fr_smartphone_podcast.mp3"), "-t", str(LIVE_SPEECH_S),
                                   "-ar", "48000", "-ac", "1", "live.wav"])
    browser = microphone_playing(playwright, speech)
    try:
        page = open_page(browser, app, permissions=["microphone"])
        page.get_by_role("tab", name="Microphone").click()
        page.locator("#live-mic button.record-button").click()
        started = time.monotonic()
        page.locator("#results-table [data-testid='cell-0-1']").wait_for(timeout=LIVE_SPEECH_S * 1000)
        first_row_s = time.monotonic() - started
        tail = page.locator("#live-tail .live-cell").first
        tail.wait_for()
        assert tail.evaluate("cell => getComputedStyle(cell).fontStyle") == "italic"
        assert "French" in page.locator("#language-line").inner_text()
        shot(page, "live-during")
        page.wait_for_timeout(max(0, round((started + LIVE_SPEECH_S + 1 - time.monotonic()) * 1000)))
        page.locator("#live-mic button.stop-button").click()
        wait_for_results(page)
        rows = table(page)
        transcript, english = (" ".join(r[column] for r in rows).lower() for column in (1, 2))
        assert first_row_s < LIVE_SPEECH_S, "the first words come while the speech goes on"
        missed = {"transcript": [word for word in LIVE_FRENCH_WORDS if word not in transcript],
                  "English": [word for word in LIVE_ENGLISH_WORDS if word not in english]}
        assert all(len(words) <= LIVE_WORDS_MISSED for words in missed.values()), (missed, transcript, english)
        assert page.locator("#player audio").count() == 1 and not page.locator("#live-tail .live-cell").count()
        downloads = page.eval_on_selector_all("#downloads a[download]", "links => links.map(a => a.download)")
        assert "live_microphone.fr-en.srt" in downloads, downloads
        assert_no_raw_output(page)
        shot(page, "live-after")
    finally:
        browser.close()


def test_microphone_recording(playwright, app, audio, tmp_path):
    speech = make_media(tmp_path, ["-i", str(audio / "fr_sous_le_consulat.wav"), "-ar", "48000", "-ac", "1",
                                   "mic.wav"])
    browser = microphone_playing(playwright, speech)
    try:
        page = open_page(browser, app, permissions=["microphone"])
        page.get_by_role("tab", name="Microphone").click()
        page.get_by_text("Record, then transcribe").click()
        page.locator("#recording button.record-button").click()
        page.wait_for_timeout(7500)
        with page.expect_response(lambda r: "/gradio_api/upload" in r.url and r.status == 200):
            page.locator("#recording button.stop-button").click()
        page.wait_for_timeout(500)  # the browser then asks for the uploaded file back
        page.click("#mic-button")
        wait_for_results(page)
        rows = table(page)
        assert rows and "consul" in " ".join(r[1] for r in rows).lower(), rows
        assert "Microphone recording" in page.locator("#source-card").inner_text()
        shot(page, "microphone")
    finally:
        browser.close()


def test_link_shows_title_thumbnail_and_both_columns(page, audio, tmp_path):
    thumbnail = make_media(tmp_path, ["-f", "lavfi", "-i", "color=c=teal:s=160x90", "-frames:v", "1", "thumb.png"])
    server = MediaServer({"consulat.wav": audio / "fr_sous_le_consulat.wav", "thumb.png": thumbnail})
    server.pages["talk.html"] = (
        '<html><head><meta property="og:title" content="Sous le consulat, a French sentence">'
        f'<meta property="og:image" content="{server.url("/media/thumb.png")}">'
        f'<meta property="og:video" content="{server.url("/media/consulat.wav")}"></head><body>A talk</body></html>'
    )
    try:
        page.locator("#url-box textarea, #url-box input").first.fill(server.url("/page/talk.html"))
        page.click("#url-button")
        wait_for_results(page)
    finally:
        server.close()
    check_french(table(page))
    card = page.locator("#source-card")
    assert "Sous le consulat, a French sentence" in card.inner_text()
    assert card.locator("img").evaluate("img => img.complete && img.naturalWidth") == 160
    shot(page, "link")


def test_file_that_is_not_audio_says_what_to_do(page, tmp_path):
    notes = tmp_path / "meeting-notes.mp3"
    notes.write_text("Minutes of the meeting: nothing to hear here.")
    upload(page, notes)
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=30_000)
    assert "This file is not audio or video that can be read. Upload an audio or video file" in toast.inner_text()
    assert_no_raw_output(page)
    shot(page, "not_audio_error")


def test_phone_width(browser, app):
    page = open_page(browser, app, width=390)
    try:
        page.get_by_role("tab", name="Upload").click()
        page.get_by_text("English: nothing to translate").click()
        wait_for_results(page)
        assert "already in English" in " ".join(r[1] for r in table(page))
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        shot(page, "phone_390")
    finally:
        page.context.close()


def test_dark_mode(browser, app):
    page = open_page(browser, app, query="?__theme=dark")
    try:
        assert page.evaluate("() => document.body.classList.contains('dark')")
        page.get_by_role("tab", name="Upload").click()
        page.get_by_text("Italian: a day at the sea").click()
        wait_for_results(page)
        assert "mare" in " ".join(r[1] for r in table(page)).lower()
        shot(page, "dark")
    finally:
        page.context.close()


def test_full_queue_says_busy_and_when_to_come_back(page, app):
    from gradio_client import Client
    from gradio_client.utils import Status

    stalled = MediaServer({})  # /slow answers nothing until the server is closed
    client = Client(app.url, verbose=False)
    jobs = []

    def submit(until: Status) -> None:
        """One more request for the stalled link, once it is running (or waiting in the queue)."""
        jobs.append(client.submit(stalled.url("/slow"), api_name="/transcribe_url"))
        page.wait_for_timeout(100)
        for _ in range(100):
            if jobs[-1].status().code == until:
                return
            page.wait_for_timeout(100)
        pytest.fail(f"request {len(jobs)} is {jobs[-1].status().code}, not {until}")

    try:
        for _ in range(CONCURRENCY):
            submit(Status.PROCESSING)
        for _ in range(QUEUE_SIZE):
            submit(Status.IN_QUEUE)
        page.locator("#url-box textarea, #url-box input").first.fill("https://example.org/talk.mp3")
        page.click("#url-button")
        toast = page.locator(".toast-body").first
        toast.wait_for(timeout=10_000)
        assert (f"The server is busy: all {QUEUE_SIZE} places in the queue are taken. Try again in a minute."
                in toast.inner_text())
        shot(page, "queue_full")
    finally:
        stalled.close()
        for job in jobs:  # released, each link fails with a message of its own
            with pytest.raises(Exception, match="link|answer|connection|reach|download"):
                job.result(timeout=60)
