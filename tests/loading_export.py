"""Checkpoints made in the tests from weights we have: our state dict written out in OpenAI's .pt
format, in Transformers' layout, or as a CTranslate2 model.bin; random models of any shape; and a
loopback HTTP server that serves a checkpoint whole, cut short or with the connection dropped."""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

from whisper_core.model import ModelDimensions, Whisper
from whisper_core.openai_checkpoint import split_attention


def save_openai_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], dims: ModelDimensions) -> Path:
    torch.save({"dims": asdict(dims), "model_state_dict": split_attention(state_dict, dims)}, path)
    return path


def transformers_model(state_dict: dict[str, torch.Tensor], dims: ModelDimensions):
    """A transformers WhisperForConditionalGeneration holding our weights (float32)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=dims.n_vocab, num_mel_bins=dims.n_mels, d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer, decoder_layers=dims.n_text_layer,
        encoder_attention_heads=dims.n_audio_head, decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=4 * dims.n_audio_state, decoder_ffn_dim=4 * dims.n_text_state,
        max_source_positions=dims.n_audio_ctx, max_target_positions=dims.n_text_ctx,
    )
    hf = {}
    for name, t in split_attention(state_dict, dims).items():
        for ours, theirs in _TO_TRANSFORMERS:
            name = name.replace(ours, theirs)
        hf[name] = t.float()
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(hf, strict=False)
    assert not unexpected and set(missing) <= {"proj_out.weight"}, (missing, unexpected)
    return model.eval()


_TO_TRANSFORMERS = [
    ("encoder.positional_embedding", "encoder.embed_positions.weight"),
    ("decoder.positional_embedding", "decoder.embed_positions.weight"),
    ("decoder.token_embedding.", "decoder.embed_tokens."),
    ("encoder.ln_post.", "encoder.layer_norm."),
    ("decoder.ln.", "decoder.layer_norm."),
    (".blocks.", ".layers."),
    (".attn_ln.", ".self_attn_layer_norm."),
    (".cross_attn_ln.", ".encoder_attn_layer_norm."),
    (".mlp_ln.", ".final_layer_norm."),
    (".cross_attn.", ".encoder_attn."),
    (".attn.", ".self_attn."),
    (".query.", ".q_proj."),
    (".key.", ".k_proj."),
    (".value.", ".v_proj."),
    (".out.", ".out_proj."),
    (".mlp.0.", ".fc1."),
    (".mlp.2.", ".fc2."),
    ("encoder.", "model.encoder."),
    ("decoder.", "model.decoder."),
]


def random_state_dict(dims: ModelDimensions, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised network of shape `dims`, in our names."""
    torch.manual_seed(seed)
    net = Whisper(dims)
    with torch.no_grad():
        net.encoder.positional_embedding.normal_(0, 0.1)
        net.decoder.positional_embedding.normal_(0, 0.1)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def write_model_bin(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A CTranslate2 model.bin (version 6, no aliases) holding `variables`."""
    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
                 np.dtype(np.float16): 4}

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    with open(path, "wb") as f:
        f.write(struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, len(variables)))
        for name, arr in variables.items():
            arr = np.asarray(arr, order="C")  # (ascontiguousarray would make scalars 1-D)
            f.write(string(name) + struct.pack(f"<B{arr.ndim}I", arr.ndim, *arr.shape))
            f.write(struct.pack("<BI", dtype_ids[arr.dtype], arr.nbytes) + arr.tobytes())
        f.write(struct.pack("<I", 0))


class CheckpointServer:
    """Serves one file at any path ending in its name, on 127.0.0.1. `mode`: "whole"; "cut" (the full
    Content-Length, half the body, a clean close); "drop" (half the body, then a reset connection)."""

    def __init__(self, file: Path):
        self.file = file
        self.mode = "whole"
        self.requests: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/models"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

            def do_GET(self):
                server.requests.append(self.path)
                if not self.path.endswith("/" + server.file.name):
                    self.send_error(404)
                    return
                data = server.file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data if server.mode == "whole" else data[: len(data) // 2])
                self.wfile.flush()
                if server.mode == "drop":  # RST instead of FIN: the client sees a reset connection
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

        return Handler
