"""The CTranslate2 reader and the loader's errors, on the bundled base and on damaged copies."""

import shutil

import pytest
import torch

from whisper_core.ct2 import read_model_bin, read_model_dir
from whisper_core.errors import CheckpointError
from whisper_core.loading import bundled_base, load_checkpoint
from whisper_core.model import ModelDimensions


@pytest.fixture(scope="module")
def base_bytes() -> bytes:
    _, parts = bundled_base()
    return b"".join(p.read_bytes() for p in parts)


def test_bundled_base_dimensions():
    _, dims, config, _ = load_checkpoint()
    assert dims == ModelDimensions(80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6)
    assert [3, 1] in config["alignment_heads"]


def test_reader_resolves_the_tied_projection(base_bytes):
    variables = read_model_bin(base_bytes)
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    assert variables["encoder/layer_0/self_attention/linear_0/weight"].shape == (1536, 512)


def test_truncated_model_is_refused(base_bytes, tmp_path):
    (tmp_path / "model.bin").write_bytes(base_bytes[: len(base_bytes) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_model_dir(tmp_path)


def test_foreign_file_is_refused(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    with pytest.raises(CheckpointError):
        read_model_dir(tmp_path)


def test_missing_directory_and_unknown_name(tmp_path):
    with pytest.raises(CheckpointError, match="no model.bin"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="Unknown model"):
        load_checkpoint("no-such-model")


def test_conversion_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPER_CORE_CACHE", str(tmp_path / "cache"))
    model_dir, parts = bundled_base()
    copy = tmp_path / "base"
    copy.mkdir()
    shutil.copy(model_dir / "config.json", copy)
    (copy / "model.bin").write_bytes(b"".join(p.read_bytes() for p in parts))
    first, dims, _, _ = load_checkpoint(str(copy))
    cached = list((tmp_path / "cache").glob("ct2-*.pt"))
    assert len(cached) == 1
    second, dims2, _, _ = load_checkpoint(str(copy))
    assert dims == dims2
    assert torch.equal(first["decoder.ln.weight"], second["decoder.ln.weight"])
    cached[0].write_bytes(b"damaged")  # a damaged cache is rebuilt, not trusted
    third, _, _, _ = load_checkpoint(str(copy))
    assert torch.equal(first["encoder.conv1.weight"], third["encoder.conv1.weight"])
