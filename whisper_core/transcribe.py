"""Long-form transcription: 30-s windows, seeking by the last timestamp, temperature fallback, silence
skipping and previous-text prompts. Each run is a job that a driver steps; one driver steps many jobs
(the transcript and the translation of one file, or the requests of many users) as shared batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    log_mel_spectrogram,
    pad_or_trim,
)
from .decoding import DecodingOptions, DecodingResult, decode_batch, detect_language, group_size
from .model import Whisper
from .timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS
from .tokenizer import Tokenizer, normalize_language
from .vad import SpeechMap, find_speech, keep_speech

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# With voice activity detection: a window of less speech than this, that the model doubts (no-speech
# probability and mean log-probability past these), is not transcribed.
SHORT_SCRAP_S = 2.0
PUNCTUATION = PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS
UNSURE_NO_SPEECH = 0.3
UNSURE_LOGPROB = -1.0

# (task, new segments, fraction of the audio done) after each window.
ProgressCallback = Callable[[str, list[dict], float], None]


@dataclass(frozen=True)
class TranscribeOptions:
    """The long-form settings (openai-whisper's names and defaults)."""

    task: str = "transcribe"
    language: str | None = None
    temperature: tuple[float, ...] = TEMPERATURES
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    beam_size: int | None = None
    best_of: int | None = None
    patience: float | None = None
    length_penalty: float | None = None
    suppress_tokens: str | list[int] | None = "-1"
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0
    word_timestamps: bool = False
    prepend_punctuations: str = PREPEND_PUNCTUATIONS
    append_punctuations: str = APPEND_PUNCTUATIONS
    vad_filter: bool = False  # skip stretches without speech (used when the audio is prepared)
    hallucination_silence_threshold: float | None = None  # seconds; needs word_timestamps

    def decoding_options(self, temperature: float, prompt: list[int], language: str) -> DecodingOptions:
        """The window decode at one rung of the temperature ladder: beams at 0, samples above."""
        sampling = temperature > 0
        return DecodingOptions(
            task=self.task,
            language=language,
            temperature=temperature,
            best_of=self.best_of if sampling else None,
            beam_size=None if sampling else self.beam_size,
            patience=None if sampling else self.patience,
            length_penalty=self.length_penalty,
            prompt=prompt,
            suppress_tokens=self.suppress_tokens,
            suppress_blank=self.suppress_blank,
            without_timestamps=self.without_timestamps,
            max_initial_timestamp=self.max_initial_timestamp,
        )


def make_options(**kwargs) -> TranscribeOptions:
    """TranscribeOptions from openai-whisper-style keywords; a single temperature becomes a ladder of one,
    `beam_size=1` means greedy."""
    temperature = kwargs.pop("temperature", TEMPERATURES)
    if isinstance(temperature, int | float):
        temperature = (float(temperature),)
    kwargs["temperature"] = tuple(float(t) for t in temperature)
    if kwargs.get("beam_size") == 1:
        kwargs["beam_size"] = None
    if "language" in kwargs:
        kwargs["language"] = normalize_language(kwargs["language"])
    unknown = set(kwargs) - set(TranscribeOptions.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    options = TranscribeOptions(**kwargs)
    if options.task not in ("transcribe", "translate"):
        raise ValueError(f"task must be 'transcribe' or 'translate', not {options.task!r}")
    return options


class Audio:
    """One input's log-mel (with a window of padding, so the last window is whole) and its windows'
    encoder outputs, kept so that both tasks and fallback retries encode a window once."""

    def __init__(self, audio: np.ndarray | Tensor, n_mels: int, device: torch.device, *, vad_filter: bool = False):
        self.speech: SpeechMap | None = None
        if vad_filter:  # decode the speech alone; times are mapped back when segments are made
            audio = audio.cpu().numpy() if torch.is_tensor(audio) else np.asarray(audio, dtype=np.float32)
            self.speech = find_speech(audio)
            audio = keep_speech(audio, self.speech)
        self.mel = log_mel_spectrogram(audio, n_mels, padding=N_SAMPLES, device=device)
        self.content_frames = self.mel.shape[-1] - N_FRAMES
        self.features: dict[int, Tensor] = {}
        self.language: tuple[str, dict[str, float]] | None = None

    def original_time(self, seconds: float) -> float:
        return seconds if self.speech is None else self.speech.to_original(seconds)

    @property
    def duration(self) -> float:
        return self.content_frames * HOP_LENGTH / SAMPLE_RATE

    def window(self, seek: int, size: int) -> Tensor:
        """The frames [seek, seek + size), zero-padded to a whole window."""
        return pad_or_trim(self.mel[:, seek : seek + size], N_FRAMES)


@dataclass
class _Pending:
    """The decode a job waits for: which window, at which rung of the temperature ladder."""

    seek: int
    size: int
    rung: int
    options: DecodingOptions


@dataclass
class Job:
    """One long-form run (one task over one audio), advanced window by window by a driver."""

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

    def __post_init__(self) -> None:
        if self.options.initial_prompt:
            self.initial_prompt_tokens = self.tokenizer.encode(" " + self.options.initial_prompt.strip())
            self.all_tokens.extend(self.initial_prompt_tokens)

    @property
    def done(self) -> bool:
        return self.seek >= self.audio.content_frames

    def start_language(self, language: str, probs: dict[str, float] | None) -> None:
        self.language = language
        self.language_probs = probs
        self.tokenizer = self.tokenizer.with_task(language, self.options.task)

    def next_decode(self) -> _Pending:
        """The window to decode now (a fallback retry keeps its window and climbs the ladder)."""
        if self.pending is None:
            size = min(N_FRAMES, self.audio.content_frames - self.seek)
            prompt = self.all_tokens[self.prompt_reset_since :]
            options = self.options.decoding_options(self.options.temperature[0], prompt, self.language)
            self.pending = _Pending(self.seek, size, 0, options)
        return self.pending

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

    def accept(self, result: DecodingResult, features: Tensor | None = None) -> list[dict]:
        """Take the decode of the pending window; returns the segments it added (none while retrying)."""
        pending = self.pending
        assert pending is not None
        next_rung = pending.rung + 1
        if self._needs_fallback(result) and next_rung < len(self.options.temperature):
            t = self.options.temperature[next_rung]
            options = self.options.decoding_options(t, list(pending.options.prompt or []), self.language)
            self.pending = _Pending(pending.seek, pending.size, next_rung, options)
            return []
        self.pending = None
        return self._advance(result, pending.seek, pending.size, features)

    def _advance(self, result: DecodingResult, window_seek: int, size: int, features: Tensor | None) -> list[dict]:
        o = self.options
        silent = o.no_speech_threshold is not None and result.no_speech_prob > o.no_speech_threshold and (
            o.logprob_threshold is None or result.avg_logprob <= o.logprob_threshold
        )
        if silent or self._unsure_scrap(result, size):
            self.seek += size  # nothing is written for this window
            self._report([])
            return []
        ts_begin = self.tokenizer.timestamp_begin
        tokens = result.tokens
        time_offset = self.seek * HOP_LENGTH / SAMPLE_RATE
        precision = 2 * HOP_LENGTH / SAMPLE_RATE  # seconds per audio token
        is_ts = [t >= ts_begin for t in tokens]
        single_timestamp_ending = is_ts[-2:] == [False, True]
        consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
        pieces: list[tuple[float, float, list[int]]] = []
        if consecutive:
            slices = consecutive + ([len(tokens)] if single_timestamp_ending else [])
            last = 0
            for cut in slices:
                piece = tokens[last:cut]
                pieces.append((time_offset + (piece[0] - ts_begin) * precision,
                               time_offset + (piece[-1] - ts_begin) * precision, piece))
                last = cut
            if single_timestamp_ending:
                self.seek += size
            else:
                self.seek += (tokens[last - 1] - ts_begin) * 2  # to the last complete segment's end
        else:
            duration = size * HOP_LENGTH / SAMPLE_RATE
            stamps = [t for t in tokens if t >= ts_begin]
            if stamps and stamps[-1] != ts_begin:
                duration = (stamps[-1] - ts_begin) * precision
            pieces.append((time_offset, time_offset + duration, tokens))
            self.seek += size
        new_segments = [
            {
                "id": len(self.segments) + n,
                "seek": window_seek,
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
        if self.aligner is not None and features is not None:
            kept = self._time_words(new_segments, features, window_seek, size, single_timestamp_ending)
            if kept is None:  # a likely invention after silence: the window is skipped past the silence
                self._report([])
                return []
            new_segments = kept
        for segment in new_segments:  # an instant or textless segment keeps its place but no text
            if segment["start"] == segment["end"] or not segment["text"].strip():
                segment["text"], segment["tokens"] = "", []
                if "words" in segment:
                    segment["words"] = []
            if self.audio.speech is not None:
                _to_original_times(segment, self.audio.original_time)
        self.segments.extend(new_segments)
        self.all_tokens.extend(t for s in new_segments for t in s["tokens"])
        if not o.condition_on_previous_text or result.temperature > 0.5:
            self.prompt_reset_since = len(self.all_tokens)  # no prompt after a high-temperature window
        self._report(new_segments)
        return new_segments

    def _unsure_scrap(self, result: DecodingResult, size: int) -> bool:
        """With the detector on, a window holding only a short scrap of "speech" (a laugh, a cough) that
        the model both doubts is speech and is unsure of: what it would write is invented."""
        if self.audio.speech is None:
            return False
        return (
            size * HOP_LENGTH / SAMPLE_RATE < SHORT_SCRAP_S
            and result.no_speech_prob > UNSURE_NO_SPEECH
            and result.avg_logprob < UNSURE_LOGPROB
        )

    def _time_words(
        self, segments: list[dict], features: Tensor, window_seek: int, size: int, single_timestamp_ending: bool
    ) -> list[dict] | None:
        """Words with their times; the next window then starts at the last word's end, which is more
        precise than the last timestamp token. With `hallucination_silence_threshold`, text that looks
        invented (improbable, too short or too long words) and is surrounded by silence is dropped;
        None means the whole window is skipped."""
        time_offset = window_seek * HOP_LENGTH / SAMPLE_RATE
        self.aligner(segments=segments, tokenizer=self.tokenizer, audio_features=features[None], num_frames=size,
                     last_speech_timestamp=self.last_speech_timestamp,
                     prepend_punctuations=self.options.prepend_punctuations,
                     append_punctuations=self.options.append_punctuations)
        if self.options.task == "translate":
            for segment in segments:
                for word in segment["words"]:
                    word["approximate"] = True  # English words over foreign speech: times are a guess
        last_end = _last_word_end(segments)
        if not single_timestamp_ending and last_end is not None and last_end > time_offset:
            self.seek = round(last_end * FRAMES_PER_SECOND)
        threshold = self.options.hallucination_silence_threshold
        if threshold is not None:
            kept = self._drop_inventions(segments, window_seek, size, single_timestamp_ending, threshold)
            if kept is None:
                return None
            segments = kept
        last_end = _last_word_end(segments)
        if last_end is not None:
            self.last_speech_timestamp = last_end
        return segments

    def _drop_inventions(
        self, segments: list[dict], window_seek: int, size: int, single_timestamp_ending: bool, threshold: float
    ) -> list[dict] | None:
        time_offset = window_seek * HOP_LENGTH / SAMPLE_RATE
        window_end = (window_seek + N_FRAMES) * HOP_LENGTH / SAMPLE_RATE
        last_end = _last_word_end(segments)
        if not single_timestamp_ending and last_end is not None and last_end > time_offset:
            # after a long silence at the window's end, the next window starts right after the speech
            self.seek = round(last_end * FRAMES_PER_SECOND) if window_end - last_end > threshold else window_seek + size
        first = next((seg for seg in segments if seg["words"]), None)
        if _looks_invented(first) and first["start"] - time_offset > threshold:
            self.seek = window_seek + round((first["start"] - time_offset) * FRAMES_PER_SECOND)
            return None
        previous_end = self.last_speech_timestamp
        for i, segment in enumerate(segments):
            if not segment["words"]:
                continue
            if _looks_invented(segment):
                following = next((seg for seg in segments[i + 1 :] if seg["words"]), None)
                window_speech_end = time_offset + size * HOP_LENGTH / SAMPLE_RATE
                next_start = following["words"][0]["start"] if following else window_speech_end
                silence_before = (
                    segment["start"] - previous_end > threshold
                    or segment["start"] < threshold
                    or segment["start"] - time_offset < 2.0
                )
                silence_after = (
                    next_start - segment["end"] > threshold
                    or _looks_invented(following)
                    or window_end - segment["end"] < 2.0
                )
                if silence_before and silence_after:
                    self.seek = round(max(time_offset + 1, segment["start"]) * FRAMES_PER_SECOND)
                    if self.audio.duration - segment["end"] < threshold:
                        self.seek = self.audio.content_frames
                    return segments[:i]
            previous_end = segment["end"]
        return segments

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
    audios = [group[0].audio for group in undecided.values()]
    first = torch.stack([pad_or_trim(a.mel, N_FRAMES) for a in audios]).to(net.dtype)
    features = net.encoder(first)
    detected = detect_language(net, features, undecided[id(audios[0])][0].tokenizer)
    for audio, feats, found in zip(audios, features, detected, strict=True):
        audio.language = found
        if audio.content_frames >= N_FRAMES:
            audio.features[0] = feats  # the same frames as the first window: encode it once
        for job in undecided[id(audio)]:
            job.start_language(*found)


@torch.inference_mode()
def step(net: Whisper, jobs: Sequence[Job]) -> None:
    """Advance every unfinished job by one decode: windows not yet encoded go through the encoder as
    one batch, and decodes that share a temperature and a group size go through the decoder as one."""
    jobs = [job for job in jobs if not job.done]
    detect_languages(net, jobs)
    pending = [(job, job.next_decode()) for job in jobs]
    to_encode: dict[tuple[int, int], tuple[Audio, _Pending]] = {}
    for job, p in pending:
        if p.seek not in job.audio.features:
            to_encode[(id(job.audio), p.seek)] = (job.audio, p)
    if to_encode:
        windows = torch.stack([audio.window(p.seek, p.size) for audio, p in to_encode.values()])
        for (audio, p), feats in zip(to_encode.values(), net.encoder(windows.to(net.dtype)), strict=True):
            audio.features[p.seek] = feats
    batches: dict[tuple[float, int], list[tuple[Job, _Pending]]] = {}
    for job, p in pending:
        batches.setdefault((p.options.temperature, group_size(p.options)), []).append((job, p))
    for batch in batches.values():
        # The jobs at one window (the two tasks of an input) side by side, the window's features once.
        by_window: dict[tuple[int, int], list[tuple[Job, _Pending]]] = {}
        for job, p in batch:
            by_window.setdefault((id(job.audio), p.seek), []).append((job, p))
        members = [member for group in by_window.values() for member in group]
        features = torch.stack([group[0][0].audio.features[group[0][1].seek] for group in by_window.values()])
        requests = [(w, p.options, job.tokenizer) for w, group in enumerate(by_window.values()) for job, p in group]
        for (job, p), result in zip(members, decode_batch(net, features, requests), strict=True):
            job.accept(result, job.audio.features[p.seek] if job.aligner else None)
    for audio in {id(job.audio): job.audio for job in jobs}.values():
        needed = {job.seek for job in jobs if job.audio is audio and not job.done}
        for seek in list(audio.features):
            if seek not in needed:
                del audio.features[seek]


def run(net: Whisper, jobs: Sequence[Job]) -> list[dict]:
    """Step the jobs together until all are done; their results in order."""
    while any(not job.done for job in jobs):
        step(net, jobs)
    for job in jobs:
        heard_nothing = job.audio.speech is not None and not job.audio.speech.spans
        if job.language is None and not heard_nothing:  # audio too short for any window: still name one
            detect_languages(net, [job])
    return [job.result() for job in jobs]


def _to_original_times(segment: dict, to_original: Callable[[float], float]) -> None:
    """Times in the speech-only audio -> times in the input."""
    segment["start"] = round(to_original(segment["start"]), 3)
    segment["end"] = round(to_original(segment["end"]), 3)
    for word in segment.get("words", []):
        word["start"] = round(to_original(word["start"]), 3)
        word["end"] = round(to_original(word["end"]), 3)


def _last_word_end(segments: list[dict]) -> float | None:
    ends = [w["end"] for s in segments for w in s.get("words", [])]
    return ends[-1] if ends else None


def _word_anomaly(word: dict) -> float:
    """How unlike spoken words this word is: improbable, implausibly short or long."""
    duration = word["end"] - word["start"]
    score = 1.0 if word.get("probability", 0.0) < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def _looks_invented(segment: dict | None) -> bool:
    """The first words of a segment are mostly anomalous (the reference's hallucination heuristic)."""
    if segment is None or not segment["words"]:
        return False
    words = [w for w in segment["words"] if w["word"] not in PUNCTUATION][:8]
    score = sum(_word_anomaly(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)
