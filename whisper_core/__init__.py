"""whisper_core: Whisper speech recognition and translation in PyTorch, with OpenAI's weights."""
