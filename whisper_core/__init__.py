"""whisper_core: Whisper speech recognition and translation in PyTorch, with OpenAI's weights."""

from .audio import load_audio, log_mel_spectrogram, pad_or_trim
from .decoding import DecodingOptions, DecodingResult
from .speech_model import SpeechModel, load_model

__all__ = [
    "DecodingOptions",
    "DecodingResult",
    "SpeechModel",
    "load_audio",
    "load_model",
    "log_mel_spectrogram",
    "pad_or_trim",
]
