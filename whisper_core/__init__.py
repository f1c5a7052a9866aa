"""whisper_core: Whisper speech recognition and translation in PyTorch, with OpenAI's weights."""

from . import heap
from .audio import load_audio, log_mel_spectrogram, pad_or_trim
from .decoding import DecodingOptions, DecodingResult
from .speech_model import SpeechModel, load_model

heap.limit_arenas()  # before torch's, ONNX Runtime's or a server's threads allocate: each would make an arena

__all__ = [
    "DecodingOptions",
    "DecodingResult",
    "SpeechModel",
    "load_audio",
    "load_model",
    "log_mel_spectrogram",
    "pad_or_trim",
]
