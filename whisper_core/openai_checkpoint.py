"""OpenAI's Whisper checkpoints: the published names, their downloads, and the .pt format
({"dims": ..., "model_state_dict": ...} with separate query/key/value projections)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from . import environment
from .download import download
from .errors import CheckpointError
from .model import ModelDimensions

DEFAULT_BASE_URL = "https://openaipublic.azureedge.net/main/whisper/models"

# Each file's SHA-256 is also the folder it is published under.
_SHA256 = {
    "tiny.en": "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03",
    "tiny": "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9",
    "base.en": "25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead",
    "base": "ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e",
    "small.en": "f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872",
    "small": "9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794",
    "medium.en": "d7440d1dc186f76616474e0ff0b3b6b879abc9d1a4926b7adfa41db2d497ab4f",
    "medium": "345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1",
    "large-v1": "e4b87e7e0bf463eb8e6956e646f1e277e901512310def2c24bf0e11bd3c28e9a",
    "large-v2": "81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524",
    "large-v3": "e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb",
    "large-v3-turbo": "aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a",
}
ALIASES = {"large": "large-v3", "turbo": "large-v3-turbo"}

# Cross-attention heads [decoder layer, head] that follow the audio-text alignment (word timing);
# OpenAI publishes them per model as packed boolean masks, written out here.
ALIGNMENT_HEADS = {
    "tiny.en": [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]],
    "tiny": [[2, 2], [3, 0], [3, 2], [3, 3], [3, 4], [3, 5]],
    "base.en": [[3, 3], [4, 7], [5, 1], [5, 5], [5, 7]],
    "base": [[3, 1], [4, 2], [4, 3], [4, 7], [5, 1], [5, 2], [5, 4], [5, 6]],
    "small.en": [[6, 6], [7, 0], [7, 3], [7, 8], [8, 2], [8, 5], [8, 7], [9, 0], [9, 4], [9, 8], [9, 10], [10, 0],
                 [10, 1], [10, 2], [10, 3], [10, 6], [10, 11], [11, 2], [11, 4]],
    "small": [[5, 3], [5, 9], [8, 0], [8, 4], [8, 7], [8, 8], [9, 0], [9, 7], [9, 9], [10, 5]],
    "medium.en": [[11, 4], [14, 1], [14, 12], [14, 14], [15, 4], [16, 0], [16, 4], [16, 9], [17, 12], [17, 14],
                  [18, 7], [18, 10], [18, 15], [20, 0], [20, 3], [20, 9], [20, 14], [21, 12]],
    "medium": [[13, 15], [15, 4], [15, 15], [16, 1], [20, 0], [23, 4]],
    "large-v1": [[9, 19], [11, 2], [11, 4], [11, 17], [22, 7], [22, 11], [22, 17], [23, 2], [23, 15]],
    "large-v2": [[10, 12], [13, 17], [16, 11], [16, 12], [16, 13], [17, 15], [17, 16], [18, 4], [18, 11], [18, 19],
                 [19, 11], [21, 2], [21, 3], [22, 3], [22, 9], [22, 12], [23, 5], [23, 7], [23, 13], [25, 5],
                 [26, 1], [26, 12], [27, 15]],
    "large-v3": [[7, 0], [10, 17], [12, 18], [13, 12], [16, 1], [17, 14], [19, 11], [21, 4], [24, 1], [25, 6]],
    "large-v3-turbo": [[2, 4], [2, 11], [3, 3], [3, 6], [3, 11], [3, 14]],
}


def model_names() -> list[str]:
    """Every name `load_model` downloads, aliases included."""
    return [*_SHA256, *ALIASES]


def canonical_name(name: str) -> str | None:
    """'turbo' -> 'large-v3-turbo'; None for a name OpenAI does not publish."""
    name = ALIASES.get(name, name)
    return name if name in _SHA256 else None


def default_download_root() -> Path:
    """~/.cache/whisper (or $XDG_CACHE_HOME/whisper), where openai-whisper keeps the same files."""
    return Path(environment.text("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper"


def model_url(name: str) -> str:
    """The download address; WHISPER_DOWNLOAD_BASE_URL replaces OpenAI's host and path (a mirror, a test
    server)."""
    base = environment.text("WHISPER_DOWNLOAD_BASE_URL") or DEFAULT_BASE_URL
    return f"{base.rstrip('/')}/{_SHA256[name]}/{name}.pt"


def download_model(name: str, download_root: str | Path | None = None) -> Path:
    """The verified .pt file of a published model (`name` as canonical_name gives it), fetched once."""
    root = Path(download_root).expanduser() if download_root else default_download_root()
    return download(model_url(name), _SHA256[name], root / f"{name}.pt")


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], ModelDimensions, dict]:
    """(state dict in our names, dimensions, config) of an OpenAI-format .pt file, memory-mapped."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint ({str(e).splitlines()[0]}); "
                              "download it again") from e
    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= checkpoint.keys():
        raise CheckpointError(f"{path} is a PyTorch file but not an OpenAI Whisper checkpoint "
                              "(no 'dims' and 'model_state_dict')")
    dims = ModelDimensions(**checkpoint["dims"])
    return fuse_attention(checkpoint["model_state_dict"], dims), dims, {}


def fuse_attention(state_dict: dict[str, torch.Tensor], dims: ModelDimensions) -> dict[str, torch.Tensor]:
    """OpenAI's module names -> ours: the same, except that self-attention's query, key and value become
    one `attn.qkv` projection and cross-attention's key and value one `cross_attn.kv`. Keys have no bias
    in Whisper: theirs is zero."""
    out = dict(state_dict)
    for prefix, parts, fused in _fused_projections(dims):
        try:
            weights = [out.pop(f"{prefix}.{part}.weight") for part in parts]
        except KeyError as e:
            raise CheckpointError(f"the checkpoint has no {e.args[0]}: not a Whisper model of its stated size") from e
        biases = [out.pop(f"{prefix}.{part}.bias", None) for part in parts]
        out[f"{prefix}.{fused}.weight"] = torch.cat(weights)
        out[f"{prefix}.{fused}.bias"] = torch.cat(
            [b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases, strict=True)]
        )
    return out


def split_attention(state_dict: dict[str, torch.Tensor], dims: ModelDimensions) -> dict[str, torch.Tensor]:
    """Ours -> OpenAI's module names (to write a checkpoint openai-whisper loads): the inverse of
    `fuse_attention`, the zero key biases left out."""
    out = dict(state_dict)
    for prefix, parts, fused in _fused_projections(dims):
        weights = out.pop(f"{prefix}.{fused}.weight").chunk(len(parts))
        biases = out.pop(f"{prefix}.{fused}.bias").chunk(len(parts))
        for part, weight, bias in zip(parts, weights, biases, strict=True):
            out[f"{prefix}.{part}.weight"] = weight.clone()
            if part != "key":
                out[f"{prefix}.{part}.bias"] = bias.clone()
    return out


def _fused_projections(dims: ModelDimensions) -> list[tuple[str, tuple[str, ...], str]]:
    """(module, OpenAI's separate projections, our fused one) for every attention layer."""
    groups = [(f"encoder.blocks.{i}.attn", ("query", "key", "value"), "qkv") for i in range(dims.n_audio_layer)]
    for i in range(dims.n_text_layer):
        groups.append((f"decoder.blocks.{i}.attn", ("query", "key", "value"), "qkv"))
        groups.append((f"decoder.blocks.{i}.cross_attn", ("key", "value"), "kv"))
    return groups
