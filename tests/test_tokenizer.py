import json

import pytest

from whisper_core.loading import bundled_base
from whisper_core.tokenizer import build_tokenizer, normalize_language


@pytest.fixture(scope="module")
def tokenizer():
    model_dir, _ = bundled_base()
    return build_tokenizer(model_dir / "tokenizer.json")


def test_special_tokens_in_whispers_order(tokenizer):
    assert tokenizer.eot == 50257
    assert tokenizer.sot == 50258
    assert tokenizer.language_token("en") == 50259
    assert tokenizer.languages[:3] == ("en", "zh", "de")
    assert len(tokenizer.languages) == 99
    assert (tokenizer.translate, tokenizer.transcribe) == (50358, 50359)
    assert (tokenizer.sot_lm, tokenizer.sot_prev, tokenizer.no_speech) == (50360, 50361, 50362)
    assert tokenizer.no_timestamps == 50363
    assert tokenizer.timestamp_begin == 50364
    assert tokenizer.encoding.n_vocab == 51865
    assert tokenizer.decode_with_timestamps([50364 + 150]) == "<|3.00|>"


def test_round_trip_and_known_ids(tokenizer):
    ids = tokenizer.encode(" And so my fellow Americans")
    assert ids == [400, 370, 452, 7177, 6280]
    for text in [" Bonjour, ça va ?", " 你好世界", " こんにちは", " Ünïcödé — ok"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_sot_sequence_and_tasks(tokenizer):
    fr = tokenizer.with_task("fr", "translate")
    assert fr.sot_sequence == (50258, fr.language_token("fr"), 50358)
    assert fr.sot_sequence_including_notimestamps[-1] == 50363


def test_non_speech_tokens_match_the_checkpoint(tokenizer):
    model_dir, _ = bundled_base()
    config = json.loads((model_dir / "config.json").read_text())
    control = {tokenizer.sot, tokenizer.translate, tokenizer.transcribe, tokenizer.sot_lm,
               tokenizer.sot_prev, tokenizer.no_speech}
    assert set(tokenizer.non_speech_tokens) == set(config["suppress_ids"]) - control


def test_language_names_and_codes():
    assert normalize_language("French") == "fr"
    assert normalize_language("FR") == "fr"
    assert normalize_language("mandarin") == "zh"
    assert normalize_language(None) is None
    with pytest.raises(ValueError, match="Unknown language"):
        normalize_language("klingon")


def test_word_split(tokenizer):
    en = tokenizer.with_task("en", "transcribe")
    words, tokens = en.split_to_word_tokens(en.encode(" Hello, world!"))
    assert words == [" Hello", ",", " world", "!"]
    assert sum(len(t) for t in tokens) == len(en.encode(" Hello, world!"))
