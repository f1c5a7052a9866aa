"""What the page shows, checked without a browser: the table, the language line, the source card and the
files a user downloads."""

from __future__ import annotations

import json

import numpy as np

from whisper_core import presentation as show
from whisper_core.audio import SAMPLE_RATE, load_audio
from whisper_core.tasks import MODES


def seg(start: float, end: float, text: str) -> dict:
    return {"start": start, "end": end, "text": text}


TRANSCRIPT = [seg(0.0, 2.5, " Bonjour à tous."), seg(2.5, 3.0, ""), seg(3.0, 7.2, " Le musée ouvre à neuf heures.")]
TRANSLATION = [seg(0.0, 2.4, " Hello everyone."), seg(2.6, 7.0, " The museum opens at nine.")]


def result(segments: list[dict], language: str = "fr") -> dict:
    return {"text": "".join(s["text"] for s in segments), "segments": segments, "language": language,
            "language_probs": None}


def test_numbers_read_as_people_write_them():
    assert [show.percent(p) for p in (0.997, 0.023, 0.0004)] == ["100%", "2.3%", "<0.1%"]


def test_language_line_names_the_top_three_and_says_why_there_is_no_translation():
    probs = {"fr": 0.93, "en": 0.04, "br": 0.02, "de": 0.01}
    assert show.language_line("fr", probs) == "Detected language: **French** 93% · English 4.0% · Breton 2.0%"
    line = show.language_line("en", {"en": 0.98}, show.ENGLISH)
    assert line.endswith("The speech is English, so nothing needed translating.")
    assert show.language_line("de", None) == "Language: **German** (chosen, not detected)"
    assert show.language_line("en", None, chosen=False) == "Language: **English** (the only language this model knows)"
    assert show.language_line("fr", probs, found_speech=False).endswith("No speech was found in this audio.")
    assert show.language_line(None, None) == ""


def test_table_puts_each_english_line_beside_the_transcript_it_overlaps():
    table = show.build_table(TRANSCRIPT, TRANSLATION, tasks=MODES["both"], language="fr")
    assert table.headers == ["Time", "Transcript (French)", "English translation"]
    assert table.rows == [["0:00–0:02", "Bonjour à tous.", "Hello everyone."],
                          ["0:03–0:07", "Le musée ouvre à neuf heures.", "The museum opens at nine."]]
    assert table.starts == [0.0, 3.0]


def test_table_says_why_a_translation_is_missing_instead_of_showing_a_transcript():
    english = show.build_table(TRANSCRIPT, [], tasks=MODES["both"], language="en", status=show.ENGLISH)
    assert [row[2] for row in english.rows] == ["(already English)"] * 2
    unsupported = show.build_table(TRANSCRIPT, [], tasks=MODES["both"], status=show.UNSUPPORTED)
    assert [row[2] for row in unsupported.rows] == ["(this model cannot translate)"] * 2


def test_table_for_one_task_has_two_columns():
    only_english = show.build_table([], TRANSLATION, tasks=MODES["translate"])
    assert only_english.headers == ["Time", "English translation"]
    assert only_english.rows[1] == ["0:02–0:07", "The museum opens at nine."]
    only_transcript = show.build_table(TRANSCRIPT, [], tasks=MODES["transcribe"], language="fr")
    assert only_transcript.headers == ["Time", "Transcript (French)"] and len(only_transcript.rows) == 2


def test_source_card_escapes_what_the_remote_site_wrote():
    card = show.source_card({"title": "<script>alert(1)</script>", "uploader": "A & B", "duration": 125.0,
                             "webpage_url": "javascript:alert(1)", "thumbnail": "https://i.example/t.jpg?a=1&b=2"})
    assert "<script>" not in card and "&lt;script&gt;" in card
    assert "javascript:" not in card and "A &amp; B · 2:05" in card
    assert 'src="https://i.example/t.jpg?a=1&amp;b=2"' in card
    linked = show.source_card({"title": "Talk", "webpage_url": "https://example.org/v"})
    assert '<a href="https://example.org/v" target="_blank" rel="noopener noreferrer">Talk</a>' in linked


def test_downloads_hold_each_result_in_four_formats_and_a_bilingual_srt(tmp_path):
    files = show.write_downloads(tmp_path, show.file_stem("Le musée: visite!"), result(TRANSCRIPT),
                                 result(TRANSLATION))
    names = [f.name for f in files]
    assert names == [f"Le_musée_visite.{lang}.{fmt}" for lang in ("fr", "en") for fmt in show.DOWNLOAD_FORMATS] + [
        "Le_musée_visite.fr-en.srt"]
    bilingual = (tmp_path / "Le_musée_visite.fr-en.srt").read_text(encoding="utf-8")
    assert "Bonjour à tous.\nHello everyone.\n" in bilingual
    assert json.loads((tmp_path / "Le_musée_visite.en.json").read_text())["segments"][1]["text"].strip() == (
        "The museum opens at nine.")
    (tmp_path / "only").mkdir()
    only = show.write_downloads(tmp_path / "only", "x", None, result(TRANSLATION, "en"))
    assert [f.name for f in only] == [f"x.en.{fmt}" for fmt in show.DOWNLOAD_FORMATS]


def test_playback_file_keeps_the_timeline(tmp_path):
    seconds = 3.0
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = show.write_playback(tone, tmp_path / "player.mp3")
    decoded = load_audio(str(path))
    assert abs(len(decoded) / SAMPLE_RATE - seconds) < 0.1
    assert path.stat().st_size < 20_000


def test_api_result_carries_both_tasks_and_the_language_probabilities():
    transcript = {**result(TRANSCRIPT), "language_probs": {"fr": 0.9, "en": 0.1}}
    out = show.api_result({"title": "t"}, {"transcribe": transcript, "translate": None}, show.ENGLISH)
    assert out["language"] == "fr" and out["language_probs"] == {"fr": 0.9, "en": 0.1}
    assert out["transcribe"] is transcript and out["translate"] is None
    assert out["translation_note"] == "not needed: the speech is English" and out["source"] == {"title": "t"}


def test_word_timed_results_add_a_karaoke_srt(tmp_path):
    words = [{"word": " Bonjour", "start": 0.0, "end": 0.4, "probability": 0.9},
             {"word": " tout", "start": 0.4, "end": 0.7, "probability": 0.9}]
    transcript = {"text": " Bonjour tout", "language": "fr", "language_probs": None,
                  "segments": [{"start": 0.0, "end": 0.7, "text": " Bonjour tout", "words": words}]}
    files = show.write_downloads(tmp_path, "x", transcript, None)
    assert (tmp_path / "x.fr.words.srt") in files
    assert "<u>Bonjour</u> tout" in (tmp_path / "x.fr.words.srt").read_text(encoding="utf-8")
