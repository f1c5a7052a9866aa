"""Read CTranslate2 (faster-whisper) Whisper checkpoints and map their tensors onto our modules."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError
from .model import ModelDimensions

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}  # 5 = bfloat16


def _read_string(buf: memoryview, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<H", buf, pos)
    pos += 2
    return bytes(buf[pos : pos + length - 1]).decode("utf-8"), pos + length


def read_model_bin(data: bytes | memoryview) -> dict[str, np.ndarray]:
    """Parse model.bin into named arrays (views into `data`, no copies); aliases resolved."""
    buf = memoryview(data)
    try:
        (version,) = struct.unpack_from("<I", buf, 0)
        if version < 5 or version > 6:
            raise CheckpointError(f"unsupported CTranslate2 model.bin version {version}")
        spec, pos = _read_string(buf, 4)
        if spec != "WhisperSpec":
            raise CheckpointError(f"this model.bin holds a {spec!r}, not a Whisper model")
        pos += 4  # spec revision
        (n_vars,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        variables: dict[str, np.ndarray] = {}
        for _ in range(n_vars):
            name, pos = _read_string(buf, pos)
            rank = buf[pos]
            pos += 1
            shape = struct.unpack_from(f"<{rank}I", buf, pos)
            pos += 4 * rank
            dtype_id = buf[pos]
            pos += 1
            (n_bytes,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if pos + n_bytes > len(buf):
                raise CheckpointError("model.bin is truncated")
            raw = buf[pos : pos + n_bytes]
            pos += n_bytes
            if dtype_id == 5:
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype_id in _DTYPES:
                arr = np.frombuffer(raw, _DTYPES[dtype_id])
            else:
                raise CheckpointError(f"unknown tensor type {dtype_id} for {name}")
            variables[name] = arr.reshape(shape)
        (n_aliases,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        for _ in range(n_aliases):
            alias, pos = _read_string(buf, pos)
            target, pos = _read_string(buf, pos)
            variables[alias] = variables[target]
    except struct.error as e:
        raise CheckpointError("model.bin is truncated") from e
    return variables


def _layer_count(variables: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}(\d+)/")
    return 1 + max(int(m.group(1)) for name in variables if (m := pattern.match(name)))


def dims_from_variables(variables: dict[str, np.ndarray]) -> ModelDimensions:
    conv1 = variables["encoder/conv1/weight"]
    embed = variables["decoder/embeddings/weight"]
    return ModelDimensions(
        n_mels=conv1.shape[1],
        n_audio_ctx=variables["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=conv1.shape[0],
        n_audio_head=int(variables["encoder/num_heads"]),
        n_audio_layer=_layer_count(variables, "encoder/layer_"),
        n_vocab=embed.shape[0],
        n_text_ctx=variables["decoder/position_encodings/encodings"].shape[0],
        n_text_state=embed.shape[1],
        n_text_head=int(variables["decoder/num_heads"]),
        n_text_layer=_layer_count(variables, "decoder/layer_"),
    )


def _block(out: dict, variables: dict, src: str, dst: str, *, cross: bool) -> None:
    def copy(s: str, d: str) -> None:
        out[f"{dst}.{d}.weight"] = variables[f"{src}/{s}/weight" if "linear" in s else f"{src}/{s}/gamma"]
        out[f"{dst}.{d}.bias"] = variables[f"{src}/{s}/bias" if "linear" in s else f"{src}/{s}/beta"]

    copy("self_attention/layer_norm", "attn_ln")
    copy("self_attention/linear_0", "attn.qkv")
    copy("self_attention/linear_1", "attn.out")
    if cross:
        copy("attention/layer_norm", "cross_attn_ln")
        copy("attention/linear_0", "cross_attn.query")
        copy("attention/linear_1", "cross_attn.kv")
        copy("attention/linear_2", "cross_attn.out")
    copy("ffn/layer_norm", "mlp_ln")
    copy("ffn/linear_0", "mlp.0")
    copy("ffn/linear_1", "mlp.2")


def state_dict_from_variables(variables: dict[str, np.ndarray], dims: ModelDimensions) -> dict[str, torch.Tensor]:
    """Our module names -> float tensors, kept in the checkpoint's precision (float16, float32; bfloat16
    is widened on reading). Quantized weights (int8, int16) are refused: they need scales we do not apply."""
    out: dict[str, np.ndarray] = {
        "encoder.conv1.weight": variables["encoder/conv1/weight"],
        "encoder.conv1.bias": variables["encoder/conv1/bias"],
        "encoder.conv2.weight": variables["encoder/conv2/weight"],
        "encoder.conv2.bias": variables["encoder/conv2/bias"],
        "encoder.positional_embedding": variables["encoder/position_encodings/encodings"],
        "encoder.ln_post.weight": variables["encoder/layer_norm/gamma"],
        "encoder.ln_post.bias": variables["encoder/layer_norm/beta"],
        "decoder.token_embedding.weight": variables["decoder/embeddings/weight"],
        "decoder.positional_embedding": variables["decoder/position_encodings/encodings"],
        "decoder.ln.weight": variables["decoder/layer_norm/gamma"],
        "decoder.ln.bias": variables["decoder/layer_norm/beta"],
    }
    for i in range(dims.n_audio_layer):
        _block(out, variables, f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    for i in range(dims.n_text_layer):
        _block(out, variables, f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    for name, arr in out.items():
        if arr.dtype.kind != "f":
            raise CheckpointError(
                f"{name} is quantized ({arr.dtype}); use a float16 or float32 CTranslate2 model "
                "(e.g. ct2-transformers-converter --quantization float16)"
            )
    return {name: torch.from_numpy(np.array(arr)) for name, arr in out.items()}


def read_model_dir(model_dir: Path, parts: list[Path] | None = None) -> tuple[dict, ModelDimensions, dict]:
    """Read a CTranslate2 directory -> (state dict, dimensions, config.json). `parts` lists the pieces of
    a model.bin split across files, in order."""
    files = parts or [model_dir / "model.bin"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"no CTranslate2 model.bin at {', '.join(missing)}; pass a faster-whisper model "
                              "directory (model.bin, config.json, tokenizer.json)")
    data = b"".join(f.read_bytes() for f in files)
    variables = read_model_bin(data)
    if "encoder/conv1/weight" not in variables:
        raise CheckpointError("model.bin holds no Whisper encoder; is this a Whisper CTranslate2 model?")
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    dims = dims_from_variables(variables)
    return state_dict_from_variables(variables, dims), dims, config
