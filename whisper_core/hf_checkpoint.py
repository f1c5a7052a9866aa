"""Hugging Face Transformers checkpoints (WhisperForConditionalGeneration's save_pretrained layout), from
a local directory or a Hub repository id fetched into Hugging Face's own cache."""

from __future__ import annotations

import json
import mmap
import pickle
import re
import struct
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError
from .model import ModelDimensions
from .openai_checkpoint import fuse_attention

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_DTYPES = {"F16": torch.float16, "F32": torch.float32, "BF16": torch.bfloat16}
# Transformers' names -> OpenAI's, applied in order to each name (after dropping the "model." prefix).
_RENAMES = [
    ("encoder.embed_positions.weight", "encoder.positional_embedding"),
    ("decoder.embed_positions.weight", "decoder.positional_embedding"),
    ("decoder.embed_tokens.", "decoder.token_embedding."),
    ("encoder.layer_norm.", "encoder.ln_post."),
    ("decoder.layer_norm.", "decoder.ln."),
    (".layers.", ".blocks."),
    (".self_attn_layer_norm.", ".attn_ln."),
    (".encoder_attn_layer_norm.", ".cross_attn_ln."),
    (".final_layer_norm.", ".mlp_ln."),
    (".self_attn.", ".attn."),
    (".encoder_attn.", ".cross_attn."),
    (".q_proj.", ".query."),
    (".k_proj.", ".key."),
    (".v_proj.", ".value."),
    (".out_proj.", ".out."),
    (".fc1.", ".mlp.0."),
    (".fc2.", ".mlp.2."),
]
# Allowed in a Hub download: what a Transformers or a CTranslate2 Whisper repository needs, not the
# TensorFlow/Flax copies most of them also hold.
_HUB_FILES = ["config.json", "generation_config.json", "tokenizer.json", "model.safetensors",
              "model.safetensors.index.json", "model-*.safetensors", "model.bin"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_transformers_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / f).is_file() for f in WEIGHT_FILES)


def looks_like_repo_id(name: str) -> bool:
    """'openai/whisper-small': one slash, no path syntax."""
    return bool(_REPO_ID.match(name)) and ".." not in name


def read_transformers_dir(path: Path) -> tuple[dict[str, torch.Tensor], ModelDimensions, dict]:
    """(state dict in our names, dimensions, config with `alignment_heads` when the repository gives them)."""
    hf_config = json.loads((path / "config.json").read_text())
    if hf_config.get("model_type") != "whisper":
        raise CheckpointError(f"{path} holds a {hf_config.get('model_type')!r} model, not Whisper")
    dims = _dimensions(hf_config, path)
    weights = {name.removeprefix("model."): t for name, t in _read_weights(path).items()}
    projection = weights.pop("proj_out.weight", None)
    embedding = weights.get("decoder.embed_tokens.weight")
    if projection is not None and embedding is not None and not torch.equal(projection, embedding):
        raise CheckpointError(f"{path}: the output projection is not the token embedding (untied), which "
                              "Whisper's architecture requires")
    state_dict = fuse_attention({_rename(name): t for name, t in weights.items()}, dims)
    config = {}
    generation = path / "generation_config.json"
    if generation.is_file() and (heads := json.loads(generation.read_text()).get("alignment_heads")):
        config["alignment_heads"] = heads
    return state_dict, dims, config


def snapshot(repo_id: str) -> Path:
    """The local copy of a Hub repository (Hugging Face's cache; HF_HUB_OFFLINE=1 answers from it alone).
    Repositories without safetensors fall back to pytorch_model.bin."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as e:
        raise CheckpointError(f"{repo_id!r} looks like a Hugging Face repository id; "
                              "`pip install huggingface_hub` to fetch it") from e
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES))
        if not any((path / f).is_file() for f in (*WEIGHT_FILES, "model.bin")):
            path = Path(snapshot_download(repo_id, allow_patterns=[*_HUB_FILES, "pytorch_model.bin"]))
    except LocalEntryNotFoundError as e:
        raise CheckpointError(f"{repo_id} is not in the Hugging Face cache and cannot be fetched now (offline or no "
                              "network); connect once to download it, or pass a local model directory") from e
    except HfHubHTTPError as e:
        raise CheckpointError(f"cannot fetch {repo_id} from the Hugging Face Hub: {str(e).splitlines()[0]}") from e
    except OSError as e:
        raise CheckpointError(f"cannot store {repo_id} in the Hugging Face cache ({e})") from e
    return path


def _rename(name: str) -> str:
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name


def _dimensions(hf_config: dict, path: Path) -> ModelDimensions:
    d = hf_config["d_model"]
    if hf_config.get("encoder_ffn_dim", 4 * d) != 4 * d or hf_config.get("decoder_ffn_dim", 4 * d) != 4 * d:
        raise CheckpointError(f"{path}: an MLP width other than 4 x d_model is not Whisper's architecture")
    if hf_config.get("activation_function", "gelu") != "gelu" or hf_config.get("scale_embedding"):
        raise CheckpointError(f"{path}: a Whisper variant (activation or embedding scale) this loader cannot run")
    return ModelDimensions(
        n_mels=hf_config["num_mel_bins"],
        n_audio_ctx=hf_config["max_source_positions"],
        n_audio_state=d,
        n_audio_head=hf_config["encoder_attention_heads"],
        n_audio_layer=hf_config["encoder_layers"],
        n_vocab=hf_config["vocab_size"],
        n_text_ctx=hf_config["max_target_positions"],
        n_text_state=d,
        n_text_head=hf_config["decoder_attention_heads"],
        n_text_layer=hf_config["decoder_layers"],
    )


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        return read_safetensors(path / "model.safetensors")
    if (path / "model.safetensors.index.json").is_file():
        shards = sorted(set(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values()))
        return {name: t for shard in shards for name, t in read_safetensors(path / shard).items()}
    try:
        return torch.load(path / "pytorch_model.bin", map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path / 'pytorch_model.bin'} is truncated or not a PyTorch file; download it "
                              "again") from e


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file's tensors, memory-mapped copy-on-write (read here so that loading needs no
    extra package: the format is a length, a JSON header, then the raw row-major data)."""
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; the model directory is incomplete")
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else size
        if 8 + n > size:
            raise CheckpointError(f"{file} is truncated; download it again")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise CheckpointError(f"{file} is not a safetensors file") from e
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    start = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(f"{file}: {name} is stored as {info['dtype']}; use a float16 or float32 checkpoint")
        begin, end = (start + offset for offset in info["data_offsets"])
        if end > size:
            raise CheckpointError(f"{file} is truncated; download it again")
        flat = torch.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=begin) \
            if end > begin else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(info["shape"])
    return tensors
