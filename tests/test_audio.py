import json

import numpy as np
import pytest
import torch

from whisper_core.audio import (
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    load_audio,
    log_mel_spectrogram,
    mel_filters,
    pad_or_trim,
)


def test_log_mel_matches_reference_front_end(shared):
    stats = json.loads((shared / "reference" / "log_mel_stats.json").read_text())
    audio = load_audio(str(shared / "audio" / stats["file"]))
    mel = log_mel_spectrogram(audio)
    ref = stats["unpadded_log_mel"]
    assert list(mel.shape) == ref["shape"]
    assert abs(mel.mean().item() - ref["mean"]) < 1e-4
    assert abs(mel.std().item() - ref["std"]) < 1e-4
    assert abs(mel.min().item() - ref["min"]) < 1e-4
    assert abs(mel.max().item() - ref["max"]) < 1e-4
    assert np.allclose(mel[:8, 0].numpy(), ref["first_frame_first_8"], atol=1e-4)
    padded = log_mel_spectrogram(pad_or_trim(audio))
    assert list(padded.shape) == stats["padded_to_30s_log_mel"]["shape"]
    assert abs(padded.mean().item() - stats["padded_to_30s_log_mel"]["mean"]) < 1e-4


def test_stereo_is_mixed_to_mono_at_16k(shared):
    audio = load_audio(str(shared / "audio" / "en_jfk_ask_not.flac"))  # 44.1 kHz stereo
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - 11.0) < 0.05


def test_mel_filterbank_shape_and_coverage():
    for n_mels in (80, 128):
        filters = mel_filters("cpu", n_mels)
        assert filters.shape == (n_mels, 201)
        assert (filters >= 0).all()
        assert (filters.sum(dim=1) > 0).all()  # every band has some frequencies
        peaks = filters.argmax(dim=1)
        assert (peaks[1:] >= peaks[:-1]).all()  # bands rise in frequency


def test_pad_or_trim_numpy_and_torch():
    assert pad_or_trim(np.ones(10)).shape == (N_SAMPLES,)
    assert pad_or_trim(np.ones(N_SAMPLES + 5)).shape == (N_SAMPLES,)
    mel = torch.ones(80, 100)
    out = pad_or_trim(mel, N_FRAMES)
    assert out.shape == (80, N_FRAMES) and out[:, 100:].abs().sum() == 0
    assert pad_or_trim(torch.ones(80, 4000), N_FRAMES).shape == (80, N_FRAMES)


def test_sine_energy_lands_in_the_right_band():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    mel = log_mel_spectrogram(tone)
    band = mel[:, 10:-10].mean(dim=1).argmax().item()
    centre = mel_filters("cpu", 80).argmax(dim=1)[band].item() * SAMPLE_RATE / 400
    assert abs(centre - 1000) < 100


@pytest.mark.parametrize("padding", [0, N_SAMPLES])
def test_log_mel_in_pieces_equals_one_stft(padding):
    """The spectrum is taken a window at a time from one padded, edge-reflected buffer; over 75 s
    (three or four pieces, the last one partial) it must equal one STFT over the whole signal, both
    edges included, whether the reflected tail is speech or appended silence."""
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(75 * SAMPLE_RATE + 123, generator=generator) * torch.linspace(0.01, 1.0, 75 * SAMPLE_RATE + 123)
    padded = torch.nn.functional.pad(audio, (0, padding))
    stft = torch.stft(padded, 400, 160, window=torch.hann_window(400), return_complex=True)
    whole = torch.clamp(mel_filters("cpu", 80) @ stft[..., :-1].abs() ** 2, min=1e-10).log10()
    whole = (torch.maximum(whole, whole.max() - 8.0) + 4.0) / 4.0
    ours = log_mel_spectrogram(audio, padding=padding)
    assert ours.shape == whole.shape == (80, (75 * SAMPLE_RATE + 123 + padding) // 160)
    torch.testing.assert_close(ours, whole, rtol=0, atol=1e-5)
