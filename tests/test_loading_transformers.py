"""Hugging Face Transformers checkpoints: the layout Transformers itself writes (save_pretrained), the
same numbers as Transformers' own Whisper, and Hub repository ids answered from an offline cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from loading_export import random_state_dict, transformers_model

from whisper_core import load_model
from whisper_core.errors import CheckpointError
from whisper_core.loading import bundled_base, load_checkpoint, load_network
from whisper_core.model import ModelDimensions

transformers = pytest.importorskip("transformers", reason="transformers is a development requirement")
ROOT = Path(__file__).resolve().parents[1]
TINY = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
                       n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=4, n_text_layer=2)


def _save_tokenizer(directory: Path) -> None:
    """The bundled base's vocabulary as Transformers writes a Whisper tokenizer."""
    tokenizer = transformers.WhisperTokenizer(tokenizer_file=str(bundled_base()[0] / "tokenizer.json"))
    tokenizer.save_pretrained(directory)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    state_dict, dims, _, _ = load_checkpoint()
    directory = tmp_path_factory.mktemp("hf") / "whisper-base"
    transformers_model(state_dict, dims).save_pretrained(directory)
    _save_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A small random Whisper saved by Transformers (safetensors, float32), with no tokenizer files."""
    directory = tmp_path_factory.mktemp("hf") / "whisper-tiny-random"
    transformers_model(random_state_dict(TINY, seed=1), TINY).save_pretrained(directory)
    return directory


def test_layout_is_transformers_own(base_dir):
    names = sorted(p.name for p in base_dir.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(names)
    assert json.loads((base_dir / "config.json").read_text())["architectures"] == ["WhisperForConditionalGeneration"]


def test_same_text_as_the_ctranslate2_original(base_dir, model, shared):
    converted = load_model(str(base_dir))
    assert converted.tokenizer.special == model.tokenizer.special
    for name in ("en_librispeech_1272-128104-0000.wav", "fr_dictee_aiff.aiff", "ko_gil_han_yeop.wav"):
        ours = converted.transcribe(str(shared / "audio" / name), temperature=0.0)
        original = model.transcribe(str(shared / "audio" / name), temperature=0.0)
        assert ours["text"] == original["text"], name
        assert ours["language"] == original["language"]


@torch.inference_mode()
def test_logits_match_transformers(tiny_dir):
    net, tokenizer, _ = load_network(str(tiny_dir), "cpu")
    reference = transformers.WhisperForConditionalGeneration.from_pretrained(tiny_dir).eval()
    torch.manual_seed(2)
    mel = torch.randn(1, TINY.n_mels, 3000)
    tokens = torch.tensor([[tokenizer.sot, tokenizer.language_token("fr"), tokenizer.transcribe, 440, 1000, 2000]])
    features = net.encoder(mel)
    expected = reference.model.encoder(mel).last_hidden_state
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)
    state = net.decoder.start(features, 1, torch.zeros(1, dtype=torch.long), tokens.shape[1])
    out = net.decoder(tokens, state)
    # The decoder gives logits, or hidden states where the vocabulary projection is a separate step.
    logits = out if out.shape[-1] == TINY.n_vocab else net.decoder.logits(out)
    torch.testing.assert_close(logits, reference(input_features=mel, decoder_input_ids=tokens).logits,
                               atol=1e-4, rtol=1e-4)


def test_without_tokenizer_files_the_vocabulary_follows_the_size(tiny_dir):
    _, _, _, tokenizer_dir = load_checkpoint(str(tiny_dir))
    assert tokenizer_dir is None
    _, tokenizer, _ = load_network(str(tiny_dir), "cpu")
    assert len(tokenizer.languages) == 99 and tokenizer.encoding.n_vocab == TINY.n_vocab


@pytest.mark.parametrize("layout", ["shards", "pytorch_model.bin"])
def test_sharded_and_legacy_weight_files(tiny_dir, tmp_path, layout):
    expected, _, _, _ = load_checkpoint(str(tiny_dir))
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(tiny_dir)
    if layout == "shards":
        hf.save_pretrained(tmp_path, max_shard_size="5MB")
        assert (tmp_path / "model.safetensors.index.json").is_file()
    else:
        shutil.copy(tiny_dir / "config.json", tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    state_dict, _, _, _ = load_checkpoint(str(tmp_path))
    assert state_dict.keys() == expected.keys()
    assert all(torch.equal(state_dict[k], expected[k]) for k in expected)


def _hub_cache(root: Path, repo_id: str, files: Path) -> Path:
    """Hugging Face's cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(files, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


# Runs in a fresh interpreter, as the app would, with every connection attempt turned into an error.
_OFFLINE_LOAD = """
import socket, sys
def refuse(*args, **kwargs):
    raise AssertionError(f"network use: {args!r}")
socket.socket.connect = refuse
socket.getaddrinfo = refuse
from whisper_core.errors import CheckpointError
from whisper_core.loading import load_network
try:
    net, tokenizer, config = load_network(sys.argv[1], "cpu")
except CheckpointError as e:
    print("error:", e)
else:
    print(net.dims.n_vocab, tokenizer.encode(" Hello"), config.get("alignment_heads"))
"""


def _offline(repo_id: str, hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _OFFLINE_LOAD, repo_id], capture_output=True, text=True, env=env,
                          timeout=120)


def test_hub_repo_id_resolves_from_the_offline_cache(tiny_dir, tmp_path):
    files = tmp_path / "files"
    shutil.copytree(tiny_dir, files)
    _save_tokenizer(files)
    (files / "generation_config.json").write_text(json.dumps({"alignment_heads": [[1, 0], [1, 3]]}))
    hf_home = _hub_cache(tmp_path / "hf", "acme/whisper-test", files)
    proc = _offline("acme/whisper-test", hf_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "51865 [2425] [[1, 0], [1, 3]]", proc.stdout + proc.stderr
    proc = _offline("acme/not-downloaded", hf_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("error: acme/not-downloaded is not in the Hugging Face cache")


def test_directories_of_the_wrong_kind(tmp_path, tiny_dir):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("hello")
    with pytest.raises(CheckpointError, match="holds no model.bin .*nor config.json"):
        load_checkpoint(str(tmp_path / "notes"))
    bert = tmp_path / "bert"
    shutil.copytree(tiny_dir, bert)
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="'bert' model, not Whisper"):
        load_checkpoint(str(bert))
    cut = tmp_path / "cut"
    shutil.copytree(tiny_dir, cut)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(str(cut))
