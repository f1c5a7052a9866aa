"""Audio front end: decode any file to 16 kHz mono float32 and turn it into Whisper's log-mel input."""

from __future__ import annotations

import functools
import shutil

import ffmpeg
import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH = 30  # seconds in one decoding window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a window
N_SAMPLES_PER_TOKEN = HOP_LENGTH * 2  # the encoder's second conv halves the frame rate
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 10 ms per frame
TOKENS_PER_SECOND = SAMPLE_RATE // N_SAMPLES_PER_TOKEN  # 20 ms per audio token
TIMESTAMP_STEP = N_SAMPLES_PER_TOKEN / SAMPLE_RATE  # 0.02 s: one audio token, so one timestamp token


@functools.lru_cache(maxsize=1)
def ffmpeg_executable() -> str:
    """The ffmpeg to run: the system's when it is on PATH, else the one the imageio-ffmpeg wheel ships,
    so that `pip install -r requirements.txt` alone is enough on a bare machine."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def load_audio(path: str, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a local media file to mono float32 at `sr` Hz (all audio streams mixed down by ffmpeg)."""
    try:
        out, _ = (
            ffmpeg.input(path, threads=0)
            .output("-", format="s16le", acodec="pcm_s16le", ac=1, ar=sr)
            .run(cmd=[ffmpeg_executable(), "-nostdin"], capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as e:
        raise RuntimeError(f"Failed to load audio: {e.stderr.decode(errors='replace').strip()}") from e
    samples = np.frombuffer(out, np.int16).astype(np.float32)
    samples /= 32768.0  # in place: an hour of audio is 230 MB of float32
    return samples


def pad_or_trim(array: torch.Tensor | np.ndarray, length: int = N_SAMPLES, *, axis: int = -1):
    """Zero-pad or cut `array` along `axis` to exactly `length` (the encoder takes fixed 30-s windows)."""
    size = array.shape[axis]
    if torch.is_tensor(array):
        if size > length:
            return array.index_select(axis, torch.arange(length, device=array.device))
        if size < length:
            pad = [0, 0] * array.ndim
            pad[(array.ndim - 1 - axis % array.ndim) * 2 + 1] = length - size
            return F.pad(array, pad)
        return array
    if size > length:
        return array.take(indices=range(length), axis=axis)
    if size < length:
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, length - size)
        return np.pad(array, widths)
    return array


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    mels = freq / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = freq >= min_log_hz
    mels = np.where(above, min_log_mel + np.log(np.maximum(freq, min_log_hz) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = mels >= min_log_mel
    return np.where(above, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


@functools.cache
def _mel_filters_np(n_mels: int) -> np.ndarray:
    """Triangular filters spaced on Slaney's mel scale, area-normalised (as Whisper was trained with)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    mel_points = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2.0)), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    fdiff = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2 : n_mels + 2] - hz_points[:n_mels]))[:, None]
    return weights.astype(np.float32)


def mel_filters(device: torch.device | str, n_mels: int) -> torch.Tensor:
    """The [n_mels, 201] filterbank as a tensor on `device`."""
    if n_mels not in (80, 128):
        raise ValueError(f"Whisper models use 80 or 128 mel bins, not {n_mels}")
    return torch.from_numpy(_mel_filters_np(n_mels)).to(device)


def log_mel_spectrogram(
    audio: str | np.ndarray | torch.Tensor,
    n_mels: int = 80,
    padding: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Whisper's log-mel: |STFT|^2 through the mel filterbank, log10, floored 8 below the peak, scaled.

    `padding` zero samples are appended first (the long-form loop pads one window so the tail is covered).
    The spectrum is taken a window's worth of frames at a time: a whole hour's complex STFT would hold
    about 600 MB at once, the log-mel it reduces to 115 MB. Frames do not depend on their neighbours, so
    the values are those of one STFT over the whole signal.
    """
    if isinstance(audio, str):
        audio = load_audio(audio)
    if not torch.is_tensor(audio):
        audio = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if device is not None:
        audio = audio.to(device)
    length = audio.shape[-1] + padding
    n_frames = length // HOP_LENGTH  # Whisper drops the STFT's last frame
    # The padded signal with torch.stft's centring (half a frame reflected at both ends), built in one
    # buffer rather than a copy per step.
    half = N_FFT // 2
    signal = audio.new_zeros(length + 2 * half)
    signal[half : half + audio.shape[-1]] = audio
    signal[:half] = signal[half + 1 : 2 * half + 1].flip(0)
    signal[half + length :] = signal[length - 1 : length - 1 + half].flip(0)
    window = torch.hann_window(N_FFT, device=audio.device)
    filters = mel_filters(audio.device, n_mels)
    log_spec = torch.empty(n_mels, n_frames, device=audio.device)
    for start in range(0, n_frames, N_FRAMES):
        stop = min(start + N_FRAMES, n_frames)
        piece = signal[start * HOP_LENGTH : (stop - 1) * HOP_LENGTH + N_FFT]
        stft = torch.stft(piece, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True)
        log_spec[:, start:stop] = torch.clamp(filters @ stft.abs() ** 2, min=1e-10).log10()
    del signal
    # In place: each step on an hour's log-mel would hold another 115 MB.
    return log_spec.clamp_(min=float(log_spec.max()) - 8.0).add_(4.0).div_(4.0)
