"""OpenAI's published checkpoints: downloads from a loopback server (checksum, atomic rename, the ways a
transfer fails), the .pt format, the name registry, and 'base' staying the bundled model offline."""

from __future__ import annotations

import hashlib

import pytest
import torch
from loading_export import CheckpointServer, save_openai_checkpoint

from whisper_core import load_model, openai_checkpoint
from whisper_core.errors import CheckpointError
from whisper_core.loading import bundled_base, load_checkpoint

FAKE_NAME = "tiny"  # the published name the test's checkpoint is served as


@pytest.fixture(scope="module")
def base_pt(tmp_path_factory):
    """The bundled base written as OpenAI's tiny.pt (float16 as published) and its SHA-256."""
    state_dict, dims, _, _ = load_checkpoint()
    path = save_openai_checkpoint(tmp_path_factory.mktemp("pt") / f"{FAKE_NAME}.pt", state_dict, dims)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def server(base_pt, monkeypatch):
    path, sha = base_pt
    srv = CheckpointServer(path)
    monkeypatch.setenv("WHISPER_DOWNLOAD_BASE_URL", srv.base_url)
    monkeypatch.setitem(openai_checkpoint._SHA256, FAKE_NAME, sha)
    yield srv
    srv.close()


def _files(root) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_download_is_verified_then_loads_and_transcribes(server, base_pt, shared, tmp_path, capsys):
    root = tmp_path / "whisper"
    model = load_model(FAKE_NAME, download_root=root)
    assert _files(root) == [f"{FAKE_NAME}.pt"]
    assert server.requests == [f"/models/{base_pt[1]}/{FAKE_NAME}.pt"]
    assert "Downloading tiny.pt" in capsys.readouterr().err
    assert model.config["alignment_heads"] == openai_checkpoint.ALIGNMENT_HEADS[FAKE_NAME]
    result = model.transcribe(str(shared / "audio" / "en_jfk_ask_not.flac"), temperature=0.0)
    assert "ask not what your country can do for you" in result["text"]
    load_checkpoint(FAKE_NAME, root)  # cached and checked: no second request
    assert len(server.requests) == 1


def test_pt_weights_equal_the_ctranslate2_original(base_pt):
    ours, dims, _, tokenizer_dir = load_checkpoint(str(base_pt[0]))
    original, original_dims, _, _ = load_checkpoint()
    assert dims == original_dims and tokenizer_dir is None
    assert ours.keys() == original.keys()
    assert all(torch.equal(ours[k], original[k]) for k in ours)


def test_damaged_cached_file_is_downloaded_again(server, base_pt, tmp_path):
    root = tmp_path / "whisper"
    root.mkdir()
    (root / f"{FAKE_NAME}.pt").write_bytes(base_pt[0].read_bytes()[:1000])
    load_checkpoint(FAKE_NAME, root)
    assert len(server.requests) == 1
    assert (root / f"{FAKE_NAME}.pt").read_bytes() == base_pt[0].read_bytes()


def test_wrong_checksum_is_refused_and_nothing_is_kept(server, monkeypatch, tmp_path):
    monkeypatch.setitem(openai_checkpoint._SHA256, FAKE_NAME, "0" * 64)
    with pytest.raises(CheckpointError, match="SHA-256") as e:
        load_checkpoint(FAKE_NAME, tmp_path / "whisper")
    assert "\n" not in str(e.value)
    assert _files(tmp_path / "whisper") == []


@pytest.mark.parametrize("mode", ["cut", "drop"])
def test_interrupted_download_leaves_no_file(server, mode, tmp_path):
    server.mode = mode
    with pytest.raises(CheckpointError, match="cut short|broke off") as e:
        load_checkpoint(FAKE_NAME, tmp_path / "whisper")
    assert "\n" not in str(e.value) and "run again" in str(e.value)
    assert _files(tmp_path / "whisper") == []


def test_no_network_says_what_to_do(base_pt, monkeypatch, tmp_path):
    import socket

    with socket.socket() as s:  # a port on this machine that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WHISPER_DOWNLOAD_BASE_URL", f"http://127.0.0.1:{port}/models")
    with pytest.raises(CheckpointError, match="cannot download small.en.pt .*connect to the network"):
        load_checkpoint("small.en", tmp_path / "whisper")
    assert _files(tmp_path / "whisper") == []


def test_base_resolves_to_the_bundled_model_without_network(monkeypatch):
    monkeypatch.setenv("WHISPER_DOWNLOAD_BASE_URL", "http://127.0.0.1:9/nowhere")
    _, _, config, tokenizer_dir = load_checkpoint("base")
    assert tokenizer_dir == bundled_base()[0] and [3, 1] in config["alignment_heads"]


def test_names_and_aliases():
    names = openai_checkpoint.model_names()
    for name in ["tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en", "large-v1",
                 "large-v2", "large-v3", "large", "large-v3-turbo", "turbo"]:
        assert name in names
    assert openai_checkpoint.canonical_name("large") == "large-v3"
    assert openai_checkpoint.model_url("large-v3-turbo").endswith(
        "/aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a/large-v3-turbo.pt")
    with pytest.raises(CheckpointError, match="tiny.en.*large-v3-turbo"):
        load_checkpoint("huge-v9")


def test_truncated_or_foreign_pt_file(base_pt, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(base_pt[0].read_bytes()[: 10_000_000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(str(cut))
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an OpenAI Whisper checkpoint"):
        load_checkpoint(str(other))


def test_cli_model_dir_is_the_download_root(server, tmp_path, capsys):
    from whisper_core.cli import main

    root = tmp_path / "models"
    assert main([str(tmp_path / "absent.wav"), "--model", FAKE_NAME, "--model_dir", str(root),
                 "--output_dir", str(tmp_path)]) == 1  # the model loads; the missing input fails alone
    assert _files(root) == [f"{FAKE_NAME}.pt"]
    assert main(["absent.wav", "--model", "huge-v9"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: Unknown model 'huge-v9': use one of")
