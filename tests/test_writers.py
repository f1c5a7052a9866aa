"""Subtitle writers and the translation's time alignment, on fixed inputs."""

import json
import re

import pytest

from whisper_core.writers import (
    SubtitleLayout,
    align_by_time,
    clock,
    format_timestamp,
    subtitle_cues,
    to_bilingual,
    to_json,
    to_srt,
    to_tsv,
    to_txt,
    to_vtt,
    write_result,
)


def _seg(start, end, text):
    return {"start": start, "end": end, "text": text}


RESULT = {
    "text": " Bonjour. Ça va ?",
    "segments": [_seg(0.0, 1.5, " Bonjour."), _seg(1.5, 1.5, ""), _seg(2.0, 3661.25, " Ça va ?")],
    "language": "fr",
}


def test_lengths_are_written_as_clock_times():
    """Whole seconds, cut: the page's positions and the media limits' messages read alike."""
    assert [clock(s) for s in (0, 7.9, 65, 65.4, 3600, 8045)] == ["0:00", "0:07", "1:05", "1:05", "1:00:00", "2:14:05"]


def test_timestamps():
    assert format_timestamp(0) == "00:00.000"
    assert format_timestamp(3661.25, always_include_hours=True, decimal_marker=",") == "01:01:01,250"
    assert format_timestamp(3661.25) == "01:01:01.250"
    with pytest.raises(ValueError):
        format_timestamp(-1)


def test_srt_vtt_txt_tsv_skip_empty_segments():
    assert to_srt(RESULT) == "1\n00:00:00,000 --> 00:00:01,500\nBonjour.\n\n2\n00:00:02,000 --> 01:01:01,250\nÇa va ?\n"
    assert to_vtt(RESULT).startswith("WEBVTT\n\n00:00.000 --> 00:01.500\nBonjour.\n")
    assert to_txt(RESULT) == "Bonjour.\nÇa va ?\n"
    assert to_tsv(RESULT).splitlines() == ["start\tend\ttext", "0\t1500\tBonjour.", "2000\t3661250\tÇa va ?"]
    assert json.loads(to_json(RESULT)) == RESULT


def test_translation_goes_to_the_segment_it_overlaps_most():
    transcript = [_seg(0, 4, " a"), _seg(4, 10, " b"), _seg(10, 12, " c")]
    translation = [_seg(0, 5, " A"), _seg(5, 9, " B1"), _seg(9, 10.5, " B2"), _seg(30, 31, " late")]
    assert align_by_time(transcript, translation) == ["A", "B1 B2", "late"]


def test_bilingual_cues_hold_both_lines():
    translation = {"segments": [_seg(0.0, 1.4, " Hello."), _seg(2.0, 3600, " How are you?")]}
    srt = to_bilingual(RESULT, translation)
    assert srt.split("\n\n")[0] == "1\n00:00:00,000 --> 00:00:01,500\nBonjour.\nHello."
    vtt = to_bilingual(RESULT, translation, fmt="vtt")
    assert "Ça va ?\nHow are you?" in vtt and vtt.startswith("WEBVTT")


def test_write_all_formats(tmp_path):
    written = write_result(RESULT, "all", tmp_path, "talk")
    assert sorted(p.name for p in written) == ["talk.json", "talk.srt", "talk.tsv", "talk.txt", "talk.vtt"]


def _worded(*words: tuple[str, float, float]) -> dict:
    return {"start": words[0][1], "end": words[-1][2], "text": "".join(w for w, _, _ in words),
            "words": [{"word": w, "start": s, "end": e, "probability": 1.0} for w, s, e in words]}


WORDED = {"segments": [
    _worded((" The", 0.0, 0.2), (" quick", 0.2, 0.5), (" brown", 0.5, 0.8), (" fox", 0.8, 1.0),
            (" jumps", 1.0, 1.3), (" over", 1.3, 1.5), (" the", 1.5, 1.6), (" lazy", 1.6, 1.9), (" dog.", 1.9, 2.3)),
    _worded((" Then", 6.0, 6.3), (" it", 6.3, 6.4), (" slept.", 6.4, 7.0)),
]}


def test_layout_respects_width_and_line_count():
    layout = SubtitleLayout(max_line_width=12, max_line_count=2)
    cues = subtitle_cues(WORDED, layout)
    for _, _, text in cues:
        lines = text.split("\n")
        assert len(lines) <= 2
        assert all(len(line) <= 12 for line in lines)
    words = " ".join(text.replace("\n", " ") for _, _, text in cues).split()
    assert words == "The quick brown fox jumps over the lazy dog. Then it slept.".split()
    assert cues[-1][0] == 6.0  # the long pause starts a cue


def test_words_per_line_and_segments_kept():
    cues = subtitle_cues(WORDED, SubtitleLayout(max_words_per_line=4))
    assert cues[0][2].split("\n") == ["The quick brown fox", "jumps over the lazy", "dog."]
    assert cues[1][2] == "Then it slept."  # without a line count, segments stay cues


def test_highlighted_words_in_order():
    cues = subtitle_cues({"segments": [WORDED["segments"][1]]}, SubtitleLayout(highlight_words=True))
    marked = [re.search(r"<u>(.*?)</u>", text).group(1) for _, _, text in cues]
    assert marked == ["Then", "it", "slept."]
    assert [c[0] for c in cues] == sorted(c[0] for c in cues)
    srt = to_srt({"segments": [WORDED["segments"][1]]}, SubtitleLayout(highlight_words=True))
    assert "<u>Then</u> it slept." in srt


def test_without_words_a_segment_is_a_cue():
    expected = [(0.0, 1.5, "Bonjour."), (2.0, 3661.25, "Ça va ?")]
    assert subtitle_cues(RESULT, SubtitleLayout(max_line_width=5)) == expected
