"""Long-form transcription: 30-s windows, seeking by the last timestamp, temperature fallback, silence
skipping and previous-text prompts. Each run is a job that a driver steps; one driver steps many jobs
(the transcript and the translation of one file, or the requests of many users) as shared batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .audio import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    TIMESTAMP_STEP,
    log_mel_spectrogram,
    pad_or_trim,
)
from .decoding import (
    DecodingOptions,
    DecodingResult,
    ResultCallback,
    WindowRequest,
    decode_steps,
    detect_language,
    group_size,
    run_to_end,
)
from .inventions import Kept, Window, drop_inventions, last_word_end, unsure_scrap
from .kernels import encode_windows, encoder_passes
from .model import Whisper
from .options import TranscribeOptions
from .tokenizer import Tokenizer
from .vad import SpeechMap, find_speech, keep_speech

FRAMES_PER_TIMESTAMP = round(TIMESTAMP_STEP * FRAMES_PER_SECOND)
# Batched long-form: text that ends on a timestamp pair this close to a chunk's end has reached it (what
# follows is the pause the chunk ends in, where a second decode would invent a word).
ONE_PASS_END_S = 1.0

# (task, new segments, fraction of the audio done) after each window.
ProgressCallback = Callable[[str, list[dict], float], None]


class Audio:
    """One input's log-mel (with a window of padding, so the last window is whole) and its windows'
    encoder outputs, kept so that both tasks and fallback retries encode a window once."""

    def __init__(self, audio: np.ndarray | Tensor, n_mels: int, device: torch.device, *, vad_filter: bool = False,
                 speech: SpeechMap | None = None, silence_padded: bool = False):
        if vad_filter or speech is not None:  # decode the speech alone; times are mapped back in segments
            audio = audio.cpu().numpy() if torch.is_tensor(audio) else np.asarray(audio, dtype=np.float32)
            speech = speech or find_speech(audio)
            audio = keep_speech(audio, speech)
        self.speech = speech
        self.silence_padded = silence_padded
        self.mel = log_mel_spectrogram(audio, n_mels, padding=N_SAMPLES, device=device)
        self.content_frames = self.mel.shape[-1] - N_FRAMES
        self.features: dict[int, Tensor] = {}
        self.language: tuple[str, dict[str, float]] | None = None

    @property
    def duration(self) -> float:
        return self.content_frames * HOP_LENGTH / SAMPLE_RATE

    def window(self, seek: int, size: int) -> Tensor:
        """The frames [seek, seek + size), zero-padded to a whole window as openai-whisper pads; or, for
        a chunk of batched long-form, followed by the log-mel of silence: after zeros the model often
        stops a few seconds before the speech ends, after silence it writes the chunk to its end."""
        if self.silence_padded:
            return self.mel[:, seek : seek + N_FRAMES]
        return pad_or_trim(self.mel[:, seek : seek + size], N_FRAMES)


@dataclass(frozen=True)
class _Pending:
    """The decode a job waits for: which window, at which rung of the temperature ladder."""

    window: Window
    rung: int
    options: DecodingOptions


@dataclass
class Job:
    """One long-form run (one task over one audio), advanced window by window by a driver. `seek` (the
    frame the next window starts at) moves in one place, `_advance`, once a window's decode is taken."""

    audio: Audio
    options: TranscribeOptions
    tokenizer: Tokenizer
    progress: ProgressCallback | None = None
    seek: int = 0
    segments: list[dict] = field(default_factory=list)
    all_tokens: list[int] = field(default_factory=list)
    prompt_reset_since: int = 0
    initial_prompt_tokens: list[int] = field(default_factory=list)
    pending: _Pending | None = None
    aligner: Callable[..., None] | None = None  # adds word timings to a window's segments
    last_speech_timestamp: float = 0.0
    language: str | None = None
    language_probs: dict[str, float] | None = None
    # Batched long-form: the audio is one chunk cut at pauses, decoded in one pass (its text is all taken,
    # never re-decoded from its last timestamp).
    one_pass: bool = False
    # A live decode stops after this many windows: what it did not reach, the next decode of the growing
    # buffer hears (a text that ends early would otherwise be decoded again from there, window after window).
    max_windows: int | None = None
    windows: int = 0  # windows whose decode was taken
    # Tokens (timestamps included) the text of the first window is known to begin with: a live decode's
    # committed words, read rather than decoded again.
    text_so_far: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.options.initial_prompt:
            self.initial_prompt_tokens = self.tokenizer.encode(" " + self.options.initial_prompt.strip())
            self.all_tokens.extend(self.initial_prompt_tokens)

    @property
    def done(self) -> bool:
        return self.seek >= self.audio.content_frames or (
            self.max_windows is not None and self.windows >= self.max_windows
        )

    def start_language(self, language: str, probs: dict[str, float] | None) -> None:
        self.language = language
        self.language_probs = probs
        self.tokenizer = self.tokenizer.with_task(language, self.options.task)

    def next_decode(self) -> _Pending:
        """The window to decode now (a fallback retry keeps its window and climbs the ladder)."""
        if self.pending is None:
            window = Window(self.seek, min(N_FRAMES, self.audio.content_frames - self.seek))
            prompt = self.all_tokens[self.prompt_reset_since :]
            options = self._decoding_options(self.options.temperature[0], prompt, window)
            self.pending = _Pending(window, 0, options)
        return self.pending

    def _decoding_options(self, temperature: float, prompt: list[int], window: Window) -> DecodingOptions:
        options = self.options.decoding_options(temperature, prompt, self.language)
        if self.text_so_far and window.seek == 0:
            options = dataclasses.replace(options, text_so_far=self.text_so_far)
        return options

    def _needs_fallback(self, result: DecodingResult) -> bool:
        o = self.options
        too_repetitive = o.compression_ratio_threshold is not None and (
            result.compression_ratio > o.compression_ratio_threshold
        )
        too_unlikely = o.logprob_threshold is not None and result.avg_logprob < o.logprob_threshold
        silent = (
            o.no_speech_threshold is not None
            and result.no_speech_prob > o.no_speech_threshold
            and too_unlikely
        )
        return (too_repetitive or too_unlikely) and not silent

    def accept(self, result: DecodingResult, cross_kv: list[tuple[Tensor, Tensor]] | None = None) -> list[dict]:
        """Take the decode of the pending window; returns the segments it added (none while retrying).
        `cross_kv`: the decoder's projection of the window, with which a job with an aligner times words."""
        pending = self.pending
        assert pending is not None
        next_rung = pending.rung + 1
        if self._needs_fallback(result) and next_rung < len(self.options.temperature):
            t = self.options.temperature[next_rung]
            options = self._decoding_options(t, list(pending.options.prompt or []), pending.window)
            self.pending = _Pending(pending.window, next_rung, options)
            return []
        self.pending = None
        self.windows += 1
        kept = self._window_segments(result, pending.window, cross_kv)
        self.seek = kept.next_seek
        if kept.segments is None:  # the window is skipped: nothing written, the prompt as it was
            self._report([])
            return []
        self.segments.extend(kept.segments)
        self.all_tokens.extend(t for s in kept.segments for t in s["tokens"])
        if not self.options.condition_on_previous_text or result.temperature > 0.5:
            self.prompt_reset_since = len(self.all_tokens)  # no prompt after a high-temperature window
        self._report(kept.segments)
        return kept.segments

    def _window_segments(self, result: DecodingResult, window: Window,
                         cross_kv: list[tuple[Tensor, Tensor]] | None) -> Kept:
        """The segments a window's decode writes, and where the next window starts."""
        o = self.options
        silent = o.no_speech_threshold is not None and result.no_speech_prob > o.no_speech_threshold and (
            o.logprob_threshold is None or result.avg_logprob <= o.logprob_threshold
        )
        if silent or (self.audio.speech is not None and unsure_scrap(result, window)):
            return Kept(None, window.seek + window.size)  # nothing is written for this window
        segments, next_seek, ends_on_timestamp = self._split(result, window)
        if self.aligner is not None and cross_kv is not None:
            kept = self._time_words(segments, cross_kv, window, next_seek, ends_on_timestamp)
            if kept.segments is None:  # a likely invention after silence: the window is skipped past it
                return kept
            segments, next_seek = kept
        for segment in segments:  # an instant or textless segment keeps its place but no text
            if segment["start"] == segment["end"] or not segment["text"].strip():
                segment["text"], segment["tokens"] = "", []
                if "words" in segment:
                    segment["words"] = []
            if self.audio.speech is not None:
                _to_original_times(segment, self.audio.speech)
        return Kept(segments, next_seek)

    def _split(self, result: DecodingResult, window: Window) -> tuple[list[dict], int, bool]:
        """Cut the tokens into segments at consecutive timestamps. Returns the segments, the seek after
        them (the window's end, or the last complete segment's end when the text runs on) and whether the
        text ends on a single timestamp (it ends at a pause, not mid-speech)."""
        ts_begin = self.tokenizer.timestamp_begin
        tokens = result.tokens
        is_ts = [t >= ts_begin for t in tokens]
        ends_on_timestamp = is_ts[-2:] == [False, True]
        consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
        pieces: list[tuple[float, float, list[int]]] = []
        next_seek = window.seek + window.size
        if consecutive:
            slices = consecutive + ([len(tokens)] if ends_on_timestamp else [])
            last = 0
            for cut in slices:
                piece = tokens[last:cut]
                pieces.append((window.start + (piece[0] - ts_begin) * TIMESTAMP_STEP,
                               window.start + (piece[-1] - ts_begin) * TIMESTAMP_STEP, piece))
                last = cut
            rest = tokens[last:]
            if not ends_on_timestamp and self.one_pass and any(not ts for ts in is_ts[last:]):
                # A chunk ends in a pause: text left open at its end runs to the end, not decoded again.
                pieces.append((window.start + (rest[0] - ts_begin) * TIMESTAMP_STEP, window.speech_end, rest))
                ends_on_timestamp = True
            elif not ends_on_timestamp:
                last_stamp = (tokens[last - 1] - ts_begin) * FRAMES_PER_TIMESTAMP
                if self.one_pass and window.size - last_stamp < ONE_PASS_END_S * FRAMES_PER_SECOND:
                    ends_on_timestamp = True  # the chunk's text is whole: what is left is its closing pause
                else:
                    next_seek = window.seek + last_stamp
        else:
            duration = window.duration
            stamps = [t for t in tokens if t >= ts_begin]
            if stamps and stamps[-1] != ts_begin:
                duration = (stamps[-1] - ts_begin) * TIMESTAMP_STEP
            pieces.append((window.start, window.start + duration, tokens))
        segments = [
            {
                "id": len(self.segments) + n,
                "seek": window.seek,
                "start": start,
                "end": end,
                "text": self.tokenizer.decode(piece),
                "tokens": list(piece),
                "temperature": result.temperature,
                "avg_logprob": result.avg_logprob,
                "compression_ratio": result.compression_ratio,
                "no_speech_prob": result.no_speech_prob,
            }
            for n, (start, end, piece) in enumerate(pieces)
        ]
        return segments, next_seek, ends_on_timestamp

    def _time_words(self, segments: list[dict], cross_kv: list[tuple[Tensor, Tensor]], window: Window,
                    next_seek: int, ends_on_timestamp: bool) -> Kept:
        """Words with their times; the next window then starts at the last word's end, which is more
        precise than the last timestamp token. With `hallucination_silence_threshold`, the no-invented-text
        rules may drop a transcript's text or its whole window."""
        self.aligner(segments=segments, tokenizer=self.tokenizer, audio_features=self.audio.features[window.seek][None],
                     cross_kv=cross_kv, num_frames=window.size, last_speech_timestamp=self.last_speech_timestamp,
                     prepend_punctuations=self.options.prepend_punctuations,
                     append_punctuations=self.options.append_punctuations)
        if self.options.task == "translate":
            for segment in segments:
                for word in segment["words"]:
                    word["approximate"] = True  # English words over foreign speech: times are a guess
        last_end = last_word_end(segments)
        if not ends_on_timestamp and last_end is not None and last_end > window.start:
            next_seek = round(last_end * FRAMES_PER_SECOND)
        kept = Kept(segments, next_seek)
        threshold = self.options.hallucination_silence_threshold
        # The rule reads word times and probabilities; a translation's times are a guess, which it takes for
        # invented words: it dropped all but 8 of the 98 words of a Japanese clip's English.
        if threshold is not None and self.options.task != "translate":
            kept = drop_inventions(segments, window, next_seek=next_seek, ends_on_timestamp=ends_on_timestamp,
                                   threshold=threshold, last_speech_end=self.last_speech_timestamp,
                                   content_frames=self.audio.content_frames)
        if kept.segments is not None and (last_end := last_word_end(kept.segments)) is not None:
            self.last_speech_timestamp = last_end
        return kept

    def _report(self, new_segments: list[dict]) -> None:
        if self.progress is not None:
            fraction = min(self.seek, self.audio.content_frames) / max(self.audio.content_frames, 1)
            self.progress(self.options.task, new_segments, fraction)

    def result(self) -> dict:
        """The plain, JSON-able result."""
        return {
            "text": self.tokenizer.decode(self.all_tokens[len(self.initial_prompt_tokens) :]),
            "segments": self.segments,
            "language": self.language,
            "language_probs": self.language_probs,
        }


@torch.inference_mode()
def detect_languages(net: Whisper, jobs: Sequence[Job]) -> None:
    """Name the language of every job that was given none, from the first 30 s of its audio; the
    transcript and the translation of one input share the detection."""
    undecided: dict[int, list[Job]] = {}
    for job in jobs:
        if job.language is not None:
            continue
        if job.options.language is not None or not job.tokenizer.is_multilingual:
            job.start_language(job.options.language or "en", None)
        elif job.audio.language is not None:
            job.start_language(*job.audio.language)
        else:
            undecided.setdefault(id(job.audio), []).append(job)
    if not undecided:
        return
    groups = list(undecided.values())
    name_languages(net, [group[0].audio for group in groups], groups[0][0].tokenizer)
    for group in groups:
        for job in group:
            job.start_language(*group[0].audio.language)


@torch.inference_mode()
def name_languages(net: Whisper, audios: Sequence[Audio], tokenizer: Tokenizer) -> None:
    """Each audio's language from its first 30 s, in one batch; the encoding is kept where it is the
    first window's."""
    first = torch.stack([pad_or_trim(a.mel, N_FRAMES) for a in audios]).to(net.dtype)
    features = encode_windows(net.encoder, first)
    for audio, feats, found in zip(audios, features, detect_language(net, features, tokenizer), strict=True):
        audio.language = found
        if audio.content_frames >= N_FRAMES or audio.silence_padded:
            audio.features[0] = feats  # the same frames as the first window: encode it once


def step(net: Whisper, jobs: Sequence[Job]) -> None:
    """Advance every unfinished job by one decode: windows not yet encoded go through the encoder as
    one batch, and decodes that share a temperature and a group size go through the decoder as one."""
    run_to_end(step_pausing(net, jobs))


@torch.inference_mode()
def step_pausing(net: Whisper, jobs: Sequence[Job]) -> Generator[None, None, None]:
    """`step`, pausing after each encoder pass and each decoded token, where its caller may do other work
    (the service serves a live speaker there rather than after a batch of eight windows)."""
    jobs = [job for job in jobs if not job.done]
    detect_languages(net, jobs)
    pending = [(job, job.next_decode()) for job in jobs]
    to_encode: dict[tuple[int, int], tuple[Audio, _Pending]] = {}
    for job, p in pending:
        if p.window.seek not in job.audio.features:
            to_encode[(id(job.audio), p.window.seek)] = (job.audio, p)
    if to_encode:
        windows = torch.stack([audio.window(p.window.seek, p.window.size) for audio, p in to_encode.values()])
        passes = []
        for encoded in encoder_passes(net.encoder, windows.to(net.dtype)):
            passes.append(encoded)
            yield
        for (audio, p), feats in zip(to_encode.values(), torch.cat(passes), strict=True):
            audio.features[p.window.seek] = feats
    batches: dict[tuple[float, int], list[tuple[Job, _Pending]]] = {}
    for job, p in pending:
        batches.setdefault((p.options.temperature, group_size(p.options)), []).append((job, p))
    for batch in batches.values():
        # The jobs at one window (the two tasks of an input) side by side, the window's features once.
        by_window: dict[tuple[int, int], list[tuple[Job, _Pending]]] = {}
        for job, p in batch:
            by_window.setdefault((id(job.audio), p.window.seek), []).append((job, p))
        members = [member for group in by_window.values() for member in group]
        features = torch.stack([group[0][0].audio.features[group[0][1].window.seek] for group in by_window.values()])
        requests = [WindowRequest(w, p.options, job.tokenizer)
                    for w, group in enumerate(by_window.values()) for job, p in group]
        yield from decode_steps(net, features, requests, _taken_by(members))
    for audio in {id(job.audio): job.audio for job in jobs}.values():
        needed = {job.seek for job in jobs if job.audio is audio and not job.done}
        for seek in list(audio.features):
            if seek not in needed:
                del audio.features[seek]


def _taken_by(members: list[tuple[Job, _Pending]]) -> ResultCallback:
    """Each job takes its decode as soon as its window is done, while the decoder still holds the window's
    projection for the word timing to read."""

    def take(index: int, result: DecodingResult, cross_kv: list[tuple[Tensor, Tensor]]) -> None:
        members[index][0].accept(result, cross_kv)

    return take


def run(net: Whisper, jobs: Sequence[Job]) -> list[dict]:
    """Step the jobs together until all are done; their results in order."""
    while any(not job.done for job in jobs):
        step(net, jobs)
    for job in jobs:
        heard_nothing = job.audio.speech is not None and not job.audio.speech.spans
        if job.language is None and not heard_nothing:  # audio too short for any window: still name one
            detect_languages(net, [job])
    return [job.result() for job in jobs]


def _to_original_times(segment: dict, speech: SpeechMap) -> None:
    """Times in the speech-only audio -> times in the input. Each word stays in the stretch of speech that
    holds its middle, and the segment's edges in its first and last words' stretches, so that neither
    reaches into a pause that was cut out."""
    words = segment.get("words") or []
    stretches = [speech.stretch_at((word["start"] + word["end"]) / 2) for word in words]
    for word, stretch in zip(words, stretches, strict=True):
        word["start"] = round(speech.to_original(word["start"], stretch), 3)
        word["end"] = round(speech.to_original(word["end"], stretch), 3)
    segment["start"] = round(speech.to_original(segment["start"], stretches[0] if words else None), 3)
    segment["end"] = round(speech.to_original(segment["end"], stretches[-1] if words else None), 3)
