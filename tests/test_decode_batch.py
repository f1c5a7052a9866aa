"""A batch of windows drops each window as soon as it is done: the windows still decoding get what they
would get alone, and the later steps compute fewer rows."""

from __future__ import annotations

import pytest
import torch

from whisper_core.audio import load_audio, log_mel_spectrogram, pad_or_trim
from whisper_core.decoding import DecodingOptions, WindowRequest, decode_batch

# Windows whose texts end far apart: a sentence of 7 s, one of 11 s, 30 s of reading, and silence.
CLIPS = [("fr_sous_le_consulat.wav", "fr"), ("en_jfk_ask_not.flac", "en"),
         ("en_ljspeech_printing_longform.ogg", "en"), (None, "en")]


@pytest.fixture(scope="module")
def windows(model, shared):
    mels = []
    for name, _ in CLIPS:
        audio = torch.zeros(16000 * 30) if name is None else torch.from_numpy(load_audio(str(shared / "audio" / name)))
        mels.append(log_mel_spectrogram(pad_or_trim(audio)))
    with torch.inference_mode():
        return model.net.encoder(torch.stack(mels))


def _requests(model, tasks: list[str], options: DecodingOptions) -> list[WindowRequest]:
    """Each window's requests in turn, one per task (two tasks fold onto one copy of its keys)."""
    return [WindowRequest(w, DecodingOptions(**{**options.__dict__, "task": task, "language": language}),
                          model.tokenizer.with_task(language, task))
            for w, (_, language) in enumerate(CLIPS) for task in tasks]


@pytest.mark.parametrize("tasks", [["transcribe"], ["transcribe", "translate"]], ids=["one-task", "both-tasks"])
@pytest.mark.parametrize("beam_size", [None, 5], ids=["greedy", "beam5"])
def test_a_window_that_is_done_leaves_the_batch_and_the_others_decode_as_alone(model, windows, monkeypatch,
                                                                               tasks, beam_size):
    options = DecodingOptions(beam_size=beam_size)
    requests = _requests(model, tasks, options)
    rows_per_step: list[int] = []
    forward = type(model.net.decoder).forward

    def counting(self, tokens, state, *args, **kwargs):
        rows_per_step.append(tokens.shape[0])
        return forward(self, tokens, state, *args, **kwargs)

    monkeypatch.setattr(type(model.net.decoder), "forward", counting)
    together = decode_batch(model.net, windows, requests)
    monkeypatch.setattr(type(model.net.decoder), "forward", forward)

    group = beam_size or 1
    assert rows_per_step[0] == len(CLIPS) * len(tasks)  # the prompts, once per request
    assert rows_per_step[1] == len(CLIPS) * len(tasks) * group
    assert rows_per_step[-1] == len(tasks) * group, "only the longest window's rows are left at the end"
    assert all(a >= b for a, b in zip(rows_per_step[1:], rows_per_step[2:], strict=False)), rows_per_step

    for request, result in zip(requests, together, strict=True):
        alone = decode_batch(model.net, windows[request.features_row : request.features_row + 1],
                             [WindowRequest(0, request.options, request.tokenizer)])[0]
        assert result.tokens == alone.tokens, (request.options.task, CLIPS[request.features_row])
        assert result.avg_logprob == pytest.approx(alone.avg_logprob, abs=1e-4)
        assert result.no_speech_prob == pytest.approx(alone.no_speech_prob, abs=1e-4)
    texts = [result.text.lower() for result in together]
    assert "consulat" in texts[0] and "country" in texts[len(tasks)]
