"""Live transcription: audio pushed as it is heard (a microphone, a stream), decoded again and again as
the buffer grows, and text committed once two consecutive decodes agree on it (LocalAgreement-2), so a
page can show final words early and a tentative tail that may still change.

`python -m whisper_core.live FILE` plays a file as a microphone would and prints each commit."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import struct
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from .audio import N_FRAMES, SAMPLE_RATE, TIMESTAMP_STEP
from .options import TASKS, TranscribeOptions
from .service import TranscriptionService
from .tasks import TaskPlan
from .timing import SENTENCE_END_MARKS
from .tokenizer import Tokenizer
from .transcribe import Audio
from .vad import SpeechMap, find_speech

# Once the buffer is this long, the audio up to the last committed end of a segment or sentence is
# dropped; past MAX_BUFFER_S, up to the last committed word (a speaker who never pauses).
TRIM_AFTER_S = 15.0
MAX_BUFFER_S = 25.0
KEEP_AFTER_SILENCE_S = 1.0  # a buffer without speech is cut to this much: a word may be starting
# The language is named from this much speech (or what the buffer holds at MAX_BUFFER_S), then fixed.
LANGUAGE_AFTER_S = 3.0
# Rows for a reader: committed lines joined into sentences (a decode's segment is often committed over
# two or three steps), up to a pause or this long.
SENTENCE_PAUSE_S = 1.0
MAX_SENTENCE_S = 15.0
PROMPT_CHARS = 200  # committed text given as the prompt: the last this many characters, whole words
# A decode hears again the committed words still in the buffer: it is matched to the committed text by
# the last MAX_OVERLAP committed words, said again within OVERLAP_S of where they were heard.
MAX_OVERLAP = 5
OVERLAP_S = 1.0
# Two decodes agree on a word when they write it alike and put it within OVERLAP_S of each other: a decode
# of a long buffer sometimes skips a stretch of speech, and its next "the" is not the other's "the".
# Two decodes that write one word differently at one place and agree on the AGREED_AFTER words that follow
# it agree on it too, as the newer decode wrote it: an unsure word (a name, a rare word) otherwise held back
# every word after it until two decodes happened to write it alike, which took 4-6 decodes on the podcast.
AGREED_AFTER = 2
# A word the aligner starts this close to the buffer's end was not heard there: after the speech it
# piles up words the model wrote from its prompt or the text before.
UNHEARD_AT_END_S = 0.05
# A decode may end its text before the buffer's speech does; at the end of the stream, the speech after
# the committed transcript is decoded again, on its own, while there is this much of it (up to
# FINAL_DECODES). The speech found reaches a little past the last word: more than that is a skipped phrase.
LEFT_UNSAID_S = 2.0
FINAL_DECODES = 3
# A decode writes at most this many tokens per second of buffer, plus a few: a decode that loops ("je veux
# dire que je veux dire que ...") otherwise runs to the window's limit, and one such step held a stream
# back for seconds. The words of a phrase said LOOP_REPEATS times in a row are kept once.
TOKENS_PER_S = 10
EXTRA_TOKENS = 10
LOOP_REPEATS = 3
LOOP_WORDS = range(2, 9)  # the lengths of phrase looked for
# A decode may take up a phrase of its task's committed words (given as written, or in the prompt) and go on
# repeating it (a translation of French speech wrote "it's a very interesting picture" over and over while the
# transcript went on; a last decode at Stop wrote "it's the same thing" three times for ten seconds of speech,
# from a prompt that said "the same as the same thing"). A task whose new words say again a phrase of
# REPEAT_WORDS words of its last committed words or of themselves is decoded again from the audio alone:
# without the given words and without the committed text as its prompt.
REPEAT_WORDS = 4
REPEAT_TAIL = 12  # committed words looked at
# Windows one decode of the buffer takes: its first only. Where that window's text ends before the buffer
# does, the next decode hears the rest; a second window from there cost a stream an encoder pass in a
# step, and slower steps leave more audio to each decode, which slows the next step in turn.
DECODE_WINDOWS = 1
# A decode waits for this much new audio (a second's chunks, less the few milliseconds a resampler holds
# back): two decodes that heard nearly the same audio agree too readily on the words at its end, which are
# the ones still unsure.
MIN_NEW_AUDIO_S = 0.9


def as_mono_float(chunk: np.ndarray) -> np.ndarray:
    """Samples as a browser sends them ([n] or [n, channels], int16 or float) -> mono float32 in [-1, 1]."""
    samples = np.asarray(chunk)
    if samples.dtype.kind == "i":
        samples = samples.astype(np.float32) / (np.iinfo(samples.dtype).max + 1)
    elif samples.dtype.kind != "f":
        raise ValueError(f"audio samples must be signed integers or floats, not {samples.dtype}")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    elif samples.ndim != 1:
        raise ValueError(f"audio must be [samples] or [samples, channels], not shape {samples.shape}")
    return samples.astype(np.float32, copy=False)


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """The samples ([n] or [n, channels]) and rate of a PCM WAV as a browser streams it: its header may
    give a length of about 2**31 frames (the recorder wrote it before it knew), so the data chunk is
    taken to the end of the bytes."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    at, fmt = 12, None
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        body = data[at + 8 : at + 8 + size]
        if kind == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif kind == b"data":
            if fmt is None:
                raise ValueError("a WAV data chunk before its format")
            code, channels, rate, _, _, bits = fmt
            dtype = {(1, 16): "<i2", (1, 32): "<i4", (3, 32): "<f4"}.get((code, bits))
            if dtype is None:
                raise ValueError(f"WAV samples of format {code} with {bits} bits are not read here")
            frame = channels * bits // 8
            body = body[: len(body) // frame * frame]
            samples = np.frombuffer(body, dtype=dtype)
            return (samples.reshape(-1, channels) if channels > 1 else samples), rate
        at += 8 + size + size % 2
    raise ValueError("a WAV file without data")


class Resampler:
    """One stream at `rate` -> 16 kHz with soxr's streaming resampler: low-pass filtered (no aliasing
    from a 48 kHz microphone), continuous across chunks, so that the result does not depend on how the
    stream was cut. It holds back a few milliseconds until `flush`."""

    def __init__(self, rate: int):
        self.rate = rate
        self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32") if rate != SAMPLE_RATE else None

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        return chunk if self._stream is None else self._stream.resample_chunk(chunk)

    def flush(self) -> np.ndarray:
        """What is held back, at the end of the stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def _key(word: str) -> str:
    """A word as agreement compares it: case and punctuation do not count."""
    return "".join(c for c in word.casefold() if not unicodedata.category(c).startswith("P")).strip()


@dataclass(frozen=True)
class _Word:
    text: str  # as the model wrote it, with its leading space
    start: float  # seconds in the stream
    end: float
    line: int  # which segment of its decode it is in
    closes: bool  # in its decode, it ends a segment or a sentence: the buffer may be cut after it

    @property
    def key(self) -> str:
        return _key(self.text)

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2

    def as_dict(self) -> dict:
        return {"word": self.text, "start": self.start, "end": self.end}


def _decoded_words(segments: list[dict], offset: float, length: float) -> list[_Word]:
    """The words of one decode of a buffer of `length` seconds, in stream time, without those the aligner
    put at its very end."""
    words = []
    for line, segment in enumerate(segments):
        timed = [w for w in segment.get("words", []) if w["start"] < length - UNHEARD_AT_END_S]
        for i, w in enumerate(timed):
            last = i == len(timed) - 1 and line < len(segments) - 1
            closes = last or w["word"].strip().endswith(tuple(SENTENCE_END_MARKS))
            words.append(_Word(w["word"], round(offset + w["start"], 3), round(offset + w["end"], 3), line, closes))
    return _until_loop(words)


def _until_loop(words: list[_Word]) -> list[_Word]:
    """The words up to a loop: where a phrase comes LOOP_REPEATS times in a row, it is kept once and what
    follows is dropped (a model stuck in a loop writes nothing heard after it)."""
    keys = [w.key for w in words]
    for start in range(len(keys)):
        for n in LOOP_WORDS:
            phrase = keys[start : start + n]
            if len(phrase) == n and all(keys[start + k * n : start + (k + 1) * n] == phrase
                                        for k in range(1, LOOP_REPEATS)):
                return words[: start + n]
    return words


def _line(words: list[_Word]) -> dict:
    return {"start": words[0].start, "end": words[-1].end, "text": "".join(w.text for w in words).strip(),
            "words": [w.as_dict() for w in words]}


class _Track:
    """One task's text: committed words (final), the tentative words of the last decode, and the lines
    handed out."""

    def __init__(self) -> None:
        self.committed: list[_Word] = []  # what agreement took, repeated lines too (they were heard)
        self.tentative: list[_Word] = []
        self.lines: list[dict] = []
        self.cut: float | None = None  # the last end of a segment or sentence in the committed text

    @property
    def end(self) -> float | None:
        return self.committed[-1].end if self.committed else None

    def prompt(self, before: float) -> str:
        """The last PROMPT_CHARS of the committed text whose audio is gone from the buffer (words still in
        it are heard again; in the prompt too, the model would take them as said already)."""
        said = [w["word"] for line in self.lines for w in line["words"] if w["end"] <= before]
        text = ""
        for word in reversed(said):
            if len(text) + len(word) > PROMPT_CHARS:
                break
            text = word + text
        return text.strip()

    def _unheard(self, words: list[_Word]) -> list[_Word]:
        """The words of a decode that come after what is committed: after the longest run of the committed
        tail that it says again where that was heard (times move between decodes, and the last word of a
        decode often stretches to the buffer's end); failing that, the words whose middle is later."""
        if not self.committed:
            return words
        end = self.committed[-1].end
        keys = [w.key for w in words]
        tail = [w.key for w in self.committed[-MAX_OVERLAP:]]
        for n in range(len(tail), 0, -1):
            found = [i + n for i in range(len(words) - n + 1)
                     if keys[i : i + n] == tail[-n:] and abs(words[i + n - 1].end - end) < OVERLAP_S]
            if found:
                return words[min(found, key=lambda after: abs(words[after - 1].end - end)) :]
        return [w for w in words if w.middle > end]

    def repeats(self, words: list[_Word]) -> bool:
        """A decode's new words say again a phrase of REPEAT_WORDS words that the last committed words or
        the new words themselves already said: the model is taking up a loop."""
        keys = [w.key for w in self.committed[-REPEAT_TAIL:]] + [w.key for w in self._unheard(words)]
        new_from = min(len(self.committed), REPEAT_TAIL)
        seen: set[tuple[str, ...]] = set()
        for i in range(len(keys) - REPEAT_WORDS + 1):
            phrase = tuple(keys[i : i + REPEAT_WORDS])
            if i + REPEAT_WORDS > new_from and phrase in seen:
                return True
            seen.add(phrase)
        return False

    def agree(self, words: list[_Word], final: bool) -> list[dict]:
        """Commit what this decode and the one before agree on (all of it when `final`); returns the new
        lines, a line that repeats the one before it left out."""
        unheard = self._unheard(words)
        agreed = len(unheard) if final else 0
        if not final:
            while agreed < min(len(unheard), len(self.tentative)) and (
                _same(unheard[agreed], self.tentative[agreed]) or _written_otherwise(unheard, self.tentative, agreed)
            ):
                agreed += 1
        new, self.tentative = unheard[:agreed], unheard[agreed:]
        self.committed.extend(new)
        if self.committed:  # where this decode, which sees more, puts the segment ends of the committed text
            ends = [w.end for w in words if w.closes and w.end <= self.committed[-1].end]
            self.cut = max([*ends, self.cut or 0.0]) if ends else self.cut
        return self._lines(new)

    def settle(self, until: float) -> list[dict]:
        """Commit the tentative words heard before `until` (stream seconds): their audio leaves the buffer,
        and no decode will hear them again to agree on them. Returns the new lines."""
        heard = 0
        while heard < len(self.tentative) and self.tentative[heard].middle <= until:
            heard += 1
        new, self.tentative = self.tentative[:heard], self.tentative[heard:]
        self.committed.extend(new)
        return self._lines(new)

    def _lines(self, new: list[_Word]) -> list[dict]:
        """The newly committed words as lines, a line that repeats the one before it left out."""
        lines = []
        for line in _split_lines(new):
            said = [w.key for w in line]
            if self.lines and said == [_key(w["word"]) for w in self.lines[-1]["words"]]:
                continue
            self.lines.append(_line(line))
            lines.append(self.lines[-1])
        return lines

    @property
    def tentative_text(self) -> str:
        return "".join(w.text for w in self.tentative).strip()

    def text_so_far(self, start: float, speech: SpeechMap, tokenizer: Tokenizer, most: int, *,
                    timed: bool = True) -> tuple[int, ...]:
        """The committed words still in a buffer that starts at `start` (stream seconds), as the model
        writes a window's text: `<|t|> words <|t|>` for each of their segments, the last one left open, the
        times those of the speech-only audio it decodes. A decode reads these in one pass and writes on
        from them, rather than writing them again; empty when they would take more than `most` tokens.
        Untimed (a translation, whose word times follow its own words, not the speech), they are one
        segment open from the buffer's start, and the model places what timestamps follow."""
        words = [w for w in self.committed if w.middle > start]
        groups: list[list[_Word]] = []
        for i, word in enumerate(words):
            if i == 0 or (timed and words[i - 1].closes):
                groups.append([])
            groups[-1].append(word)
        tokens: list[int] = []
        last = 0  # timestamps never go back, and a segment lasts at least one step

        def step(at: float, earliest: int) -> int:
            return min(max(round(speech.to_speech(max(at - start, 0.0)) / TIMESTAMP_STEP), earliest), N_FRAMES // 2)

        for i, group in enumerate(groups):
            opening = step(group[0].start, last) if timed else 0
            tokens += [tokenizer.timestamp_begin + opening, *tokenizer.encode("".join(w.text for w in group))]
            if i < len(groups) - 1:
                last = step(group[-1].end, opening + 1)
                tokens.append(tokenizer.timestamp_begin + last)
        return tuple(tokens) if len(tokens) <= most else ()


def _same(word: _Word, before: _Word) -> bool:
    """One word as two decodes heard it."""
    return word.key == before.key and abs(word.start - before.start) < OVERLAP_S


def _written_otherwise(words: list[_Word], before: list[_Word], i: int) -> bool:
    """Word `i` of two decodes is one word written two ways: put at one place, and the AGREED_AFTER words
    after it the same in both."""
    after = range(i + 1, i + 1 + AGREED_AFTER)
    return (abs(words[i].start - before[i].start) < OVERLAP_S and min(len(words), len(before)) > after[-1]
            and all(_same(words[k], before[k]) for k in after))


def _split_lines(words: list[_Word]) -> list[list[_Word]]:
    """Consecutive words of one segment of their decode together."""
    lines: list[list[_Word]] = []
    for word in words:
        if lines and lines[-1][-1].line == word.line:
            lines[-1].append(word)
        else:
            lines.append([word])
    return lines


def join_lines(lines: list[dict]) -> list[dict]:
    """Consecutive lines as one while the sentence goes on: no sentence end, no pause, not too long."""
    joined: list[dict] = []
    for line in lines:
        last = joined[-1] if joined else None
        if last and not last["text"].endswith(tuple(SENTENCE_END_MARKS)) and (
            line["start"] - last["end"] < SENTENCE_PAUSE_S and line["end"] - last["start"] <= MAX_SENTENCE_S
        ):
            words = [*last["words"], *line["words"]]
            joined[-1] = {"start": last["start"], "end": line["end"],
                          "text": "".join(w["word"] for w in words).strip(), "words": words}
        else:
            joined.append(line)
    return joined


def _merged(*updates: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Lines committed per task by consecutive parts of a step, in order."""
    merged: dict[str, list[dict]] = {}
    for update in updates:
        for task, lines in update.items():
            merged.setdefault(task, []).extend(lines)
    return merged


@dataclass(frozen=True)
class Update:
    """What one step changed. `committed`: per task decoded, the lines committed now ({start, end, text,
    words: [{word, start, end}]}, seconds in the stream), final; `tentative`: per task, the text heard
    after them, which the next decodes may still change; `language`: None until it is named."""

    committed: dict[str, list[dict]]
    tentative: dict[str, str]
    language: str | None


class LiveSession:
    """A stream of audio, transcribed (and translated) as it arrives, on the shared service: its decodes
    are urgent there, batched with other live speakers'. `push` only stores the audio; `step` decodes
    everything buffered at once, so a stream that falls behind is never queued decodes deep; `finish`
    commits what is left. `push` may be called from another thread than `step`. `options` are the
    long-form ones, with word times always on and temperature 0 only: a ladder would resample unsure
    windows, and sampled decodes seldom agree. The rule against text invented between silences is off:
    the voice detector already gives the model speech alone, and the rule takes the buffer's edges, cuts
    in the speech, for silence."""

    def __init__(self, service: TranscriptionService, plan: TaskPlan, options: TranscribeOptions):
        self.service = service
        self.model = service.model
        self.plan = plan
        self.options = dataclasses.replace(options, word_timestamps=True, vad_filter=False, batch_size=None,
                                           temperature=(0.0,), hallucination_silence_threshold=None)
        self.language = options.language or (None if self.model.is_multilingual else "en")
        self.language_probs: dict[str, float] | None = None  # when the language was detected
        self._tracks: dict[str, _Track] = {}
        if self.language is not None:
            self._start_tracks()
        self._lock = threading.Lock()
        self._arrived: list[np.ndarray] = []  # pushed, not yet taken by a step
        self._heard: list[np.ndarray] = []  # everything pushed: the recording
        self._resampler = Resampler(SAMPLE_RATE)
        self._received = 0  # samples pushed (16 kHz)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # samples dropped from the buffer's start: stream time = offset + buffer time
        self._decoded_to = 0  # the stream sample the speech ended at, at the last decode
        self._audio_at_decode = 0  # the stream sample the buffer ended at, at the last decode
        self.decodes = 0  # decodes of the buffer so far

    @property
    def received_s(self) -> float:
        """Seconds of audio pushed so far."""
        return self._received / SAMPLE_RATE

    @property
    def buffered_s(self) -> float:
        """Seconds of audio the next decode hears again: what a step's time grows with."""
        return len(self._buffer) / SAMPLE_RATE

    @property
    def waiting_s(self) -> float:
        """Seconds pushed that no decode has taken yet: how far behind the speaker the text is."""
        with self._lock:
            return sum(map(len, self._arrived)) / SAMPLE_RATE

    def push(self, chunk: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Add audio ([n] or [n, channels], int16 or float, any rate); nothing is decoded here."""
        samples = as_mono_float(chunk)
        with self._lock:
            if sample_rate != self._resampler.rate:
                self._keep(self._resampler.flush())
                self._resampler = Resampler(sample_rate)
            self._keep(self._resampler(samples))

    def recording(self) -> np.ndarray:
        """All the audio pushed, at 16 kHz."""
        with self._lock:
            return np.concatenate([np.zeros(0, dtype=np.float32), *self._heard])

    def step(self) -> Update:
        """Decode the buffer with what arrived since the last step, and commit what two decodes agree on."""
        return self._advance(final=False)

    def finish(self) -> Update:
        """The end of the stream: decode what is left once more and commit all of it."""
        with self._lock:
            self._keep(self._resampler.flush())
        update = self._advance(final=True)
        for _ in range(FINAL_DECODES - 1):
            cut = self._unsaid_from()
            if cut is None:
                break
            self._drop(cut)
            self._decoded_to = self._offset  # what follows is decoded although no audio arrived
            more = self._advance(final=True)
            if not any(more.committed.values()):
                break
            update = Update({task: update.committed[task] + lines for task, lines in more.committed.items()},
                            more.tentative, more.language)
        self._drop(len(self._buffer))
        return update

    def segments(self, task: str) -> list[dict]:
        """The lines committed so far for `task` (none for a task not decoded)."""
        track = self._tracks.get(task)
        return list(track.lines) if track else []

    def sentences(self, task: str) -> list[dict]:
        """The committed lines of `task` joined into sentences: the rows a reader wants, each of which
        only grows while the speaker finishes it."""
        return join_lines(self.segments(task))

    def tentative(self, task: str) -> str:
        """The text heard after the committed lines of `task`, which may still change."""
        track = self._tracks.get(task)
        return track.tentative_text if track else ""

    def text(self, task: str) -> str | None:
        """The committed text of `task`; None for a task the plan does not decode for this language."""
        if not self.plan.runs(task, self.language):
            return None
        return "".join(w["word"] for line in self.segments(task) for w in line["words"]).strip()

    def results(self) -> dict[str, dict | None]:
        """{task: result} as a file's run gives them (text, numbered segments, language), None for a task
        not decoded: what the page's table and the subtitle writers take."""
        results: dict[str, dict | None] = dict.fromkeys(TASKS)
        for task in self._tracks:
            segments = [{"id": i, **line} for i, line in enumerate(self.sentences(task))]
            results[task] = {"text": self.text(task), "segments": segments, "language": self.language,
                             "language_probs": self.language_probs}
        return results

    def _keep(self, samples: np.ndarray) -> None:
        if len(samples):
            self._arrived.append(samples)
            self._heard.append(samples)
            self._received += len(samples)

    def _start_tracks(self) -> None:
        self._tracks = {task: _Track() for task in self.plan.tasks if self.plan.runs(task, self.language)}

    def _take(self) -> int:
        with self._lock:
            arrived, self._arrived = self._arrived, []
        if arrived:
            self._buffer = np.concatenate([self._buffer, *arrived])
        return sum(map(len, arrived))

    def _drop(self, samples: int) -> None:
        if samples > 0:
            self._buffer = self._buffer[samples:]
            self._offset += samples

    def _advance(self, final: bool) -> Update:
        committed = _merged(self._commit(final), self._trim())
        return Update({task: committed.get(task, []) for task in self._tracks},
                      {task: track.tentative_text for task, track in self._tracks.items()}, self.language)

    def _commit(self, final: bool) -> dict[str, list[dict]]:
        """Take what arrived, cut the buffer where it may be and decode it; the lines committed."""
        arrived = self._take()
        if not arrived and not final:  # the same audio decoded twice would agree with itself
            return {}
        settled = self._trim()  # what came during a slow step may push the buffer past a cut: not decoded again
        return _merged(settled, self._decode_new(final))

    def _decode_new(self, final: bool) -> dict[str, list[dict]]:
        """Decode the buffer when there is new speech (or at the end); the lines committed."""
        speech = find_speech(self._buffer) if len(self._buffer) else SpeechMap((), 0)
        if not speech.spans:  # nothing said: nothing decoded, and no "Thank you." over the silence
            for track in self._tracks.values():
                track.tentative = []
            self._drop(len(self._buffer) - round(KEEP_AFTER_SILENCE_S * SAMPLE_RATE))
            return {}
        if self.language is None and not final and speech.speech_samples < LANGUAGE_AFTER_S * SAMPLE_RATE and (
            len(self._buffer) < MAX_BUFFER_S * SAMPLE_RATE
        ):
            return {}  # too little speech yet to name its language
        heard_to = self._offset + speech.spans[-1][1]
        if not final and self._offset + len(self._buffer) - self._audio_at_decode < MIN_NEW_AUDIO_S * SAMPLE_RATE:
            return {}  # the audio that came is kept for the next decode
        if heard_to <= self._decoded_to:  # no new speech: a decode would only repeat the last one
            if final:
                return {task: track.agree(track.tentative, True) for task, track in self._tracks.items()}
            if not any(track.tentative for track in self._tracks.values()):
                return {}
        self._decoded_to, self._audio_at_decode = heard_to, self._offset + len(self._buffer)
        self.decodes += 1
        decoded = self._decode(speech, final)
        return {task: track.agree(decoded[task], final) for task, track in self._tracks.items()}

    def _decode(self, speech: SpeechMap, final: bool) -> dict[str, list[_Word]]:
        """Every task on the speech of the buffer, in one long-form run (a window both tasks are at is
        encoded once), each prompted with its own committed text and given its committed words still in
        the buffer as written. When the transcript (or only task), so given, stops LEFT_UNSAID_S or more
        before the speech does, it is decoded again without them: from some given words the model ends the
        window at once, and every decode after would stop there too. (A translation's word times, which
        follow its own words, cannot tell: judged by them, most of its decodes were run twice. The last
        decode, at the end of the stream, is judged so all the same: what it leaves out is lost, and a
        page run's English lost its last seven seconds there.) A task whose decode takes up a loop is
        decoded again from the audio alone (REPEAT_WORDS). The first decode names the language (from the
        buffer's speech) and so which tasks go on."""
        audio = Audio(self._buffer, self.model.net.dims.n_mels, self.model.device, speech=speech)
        start = self._offset / SAMPLE_RATE
        words, given = self._decode_tasks(audio, speech, list(self._tracks or self.plan.tasks), given=True)
        speech_end = start + speech.spans[-1][1] / SAMPLE_RATE
        leading = self._leading()
        stalled = [task for task in given if (final or self._tracks[task] is leading)
                   and speech_end - (words[task][-1].end if words[task] else start) >= LEFT_UNSAID_S]
        repeating = [task for task in words if task not in stalled and self._tracks[task].repeats(words[task])]
        if stalled or repeating:
            words.update(self._decode_tasks(audio, speech, stalled + repeating, given=False, unprompted=repeating)[0])
        return words

    def _decode_tasks(self, audio: Audio, speech: SpeechMap, tasks: list[str], *, given: bool,
                      unprompted: Collection[str] = ()) -> tuple[dict[str, list[_Word]], list[str]]:
        """The words of one run of `tasks` on the buffer, and the tasks given words as written (`given`:
        their committed words still in the buffer, where there are any). The tasks in `unprompted` are
        not given their committed text as the prompt."""
        start = self._offset / SAMPLE_RATE
        jobs, given_words = [], []
        for task in tasks:
            track = self._tracks.get(task)
            context = track.prompt(start) if track and task not in unprompted else ""
            prompt = " ".join(filter(None, [self.options.initial_prompt, context]))
            so_far = track.text_so_far(start, speech, self.model.tokenizer, self._most_tokens() - 8,
                                       timed=track is self._leading()) if track and given else ()
            if so_far:
                given_words.append(task)
            written_to = max(track.end - start, 0.0) if so_far and track.end is not None else 0.0
            options = dataclasses.replace(self.options.for_task(task), language=self.language,
                                          initial_prompt=prompt or None, sample_len=self._sample_len(written_to))
            jobs.append(self.model.job(audio, options, max_windows=DECODE_WINDOWS, text_so_far=so_far))
        results = self.service.decode_jobs(jobs, self.plan, urgent=True)
        if self.language is None:
            first = next(r for r in results.values() if r is not None)
            self.language, self.language_probs = first["language"], first.get("language_probs")
            self._start_tracks()
        length = len(self._buffer) / SAMPLE_RATE
        words = {task: _decoded_words(results[task]["segments"], start, length) for task in tasks
                 if task in self._tracks}
        return words, [task for task in given_words if task in words]

    def _most_tokens(self) -> int:
        return self.model.net.dims.n_text_ctx // 2

    def _sample_len(self, written_to: float) -> int:
        """The most tokens a decode of the buffer may write after `written_to` (seconds into the buffer,
        what it is given as written): that speech at a fast speaker's rate."""
        seconds = max(len(self._buffer) / SAMPLE_RATE - written_to, 0.0)
        return min(self._most_tokens(), math.ceil(TOKENS_PER_S * seconds) + EXTRA_TOKENS)

    def _leading(self) -> _Track | None:
        """The track whose word times follow the speech, by which the buffer is cut: the transcript, or the
        only task. A translation's word times follow its own words."""
        return self._tracks.get("transcribe") or next(iter(self._tracks.values()), None)

    def _unsaid_from(self) -> int | None:
        """Where in the buffer the speech that the leading track has not committed starts, when there is
        LEFT_UNSAID_S of it: a decode stopped early there."""
        track = self._leading()
        if track is None or track.end is None:
            return None
        cut = max(round(track.end * SAMPLE_RATE) - self._offset, 0)
        rest = self._buffer[cut:]
        if len(rest) < LEFT_UNSAID_S * SAMPLE_RATE or find_speech(rest).speech_samples < LEFT_UNSAID_S * SAMPLE_RATE:
            return None
        return cut

    def _trim(self) -> dict[str, list[dict]]:
        """Drop the audio whose transcript (or only task) is committed up to the end of a segment or
        sentence, or past MAX_BUFFER_S up to its last committed word (one long sentence). The other task
        commits what its last decode heard in that audio: waiting for it to agree there held the whole
        buffer, and each decode grew with it. Returns those lines."""
        track = self._leading()
        if track is None or len(self._buffer) <= TRIM_AFTER_S * SAMPLE_RATE:
            return {}
        start = self._offset / SAMPLE_RATE
        until = track.cut
        if len(self._buffer) > MAX_BUFFER_S * SAMPLE_RATE and (until is None or until <= start):
            until = track.end
        if until is None or until <= start:
            return {}
        self._drop(round(until * SAMPLE_RATE) - self._offset)
        return {task: other.settle(until) for task, other in self._tracks.items() if other is not track}


class LiveFeed:
    """A live session stepped on a thread of its own whenever audio has arrived, for a caller that must
    return at once: a page's microphone sends its next chunk only when the last one was answered, so a
    handler that waited for a decode would lose the speech meanwhile. `report` gets each step's update
    and the seconds pushed when it came. With `idle_s`, a feed that gets no audio for that long (the
    visitor left without pressing Stop) stops stepping and lets its session go."""

    def __init__(self, session: LiveSession, report: Callable[[Update, float], None] | None = None, *,
                 idle_s: float | None = None):
        self.session = session
        self.report = report
        self.idle_s = idle_s
        self.error: BaseException | None = None  # what stopped the stepping; `close` raises it
        self.abandoned = False  # no audio came for idle_s
        self._audio_came = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Still stepping: neither closed, nor failed, nor abandoned."""
        return self._thread.is_alive() and not self._closing

    def push(self, chunk: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        self.session.push(chunk, sample_rate)
        self._audio_came.set()

    def close(self) -> Update:
        """Stop stepping and commit what is left; the last update, with everything committed."""
        self._closing = True
        self._audio_came.set()
        self._thread.join()
        if self.error is not None:
            raise self.error
        update = self.session.finish()
        if self.report:
            self.report(update, self.session.received_s)
        return update

    def _run(self) -> None:
        while True:
            if not self._audio_came.wait(self.idle_s):
                self.abandoned = True
                return
            self._audio_came.clear()
            if self._closing:
                return
            try:
                update = self.session.step()
            except Exception as e:  # said to whoever closes the feed
                self.error = e
                return
            if self.report:
                self.report(update, self.session.received_s)


class LiveBusy(Exception):
    """Every place for a live session is taken."""


class LivePlaces:
    """The live sessions a server runs at once, on its one service: each keeps a decode going all the
    time it is open, so past a few the machine cannot keep every speaker real-time. A session whose audio
    stops coming for `idle_s` gives its place back by itself."""

    def __init__(self, service: TranscriptionService, places: int, idle_s: float):
        self.service = service
        self.places = places
        self.idle_s = idle_s
        self._feeds: list[LiveFeed] = []
        self._lock = threading.Lock()

    def open(self, plan: TaskPlan, options: TranscribeOptions) -> LiveFeed:
        """A new live session's feed; raises LiveBusy when all places are taken."""
        with self._lock:
            self._feeds = [feed for feed in self._feeds if feed.running]
            if len(self._feeds) >= self.places:
                raise LiveBusy(f"all {self.places} places for live sessions are taken")
            feed = LiveFeed(LiveSession(self.service, plan, options), idle_s=self.idle_s)
            self._feeds.append(feed)
            return feed

    @property
    def in_use(self) -> int:
        with self._lock:
            return sum(feed.running for feed in self._feeds)


def play(session: LiveSession, samples: np.ndarray, *, chunk_s: float, speed: float,
         report: Callable[[Update, float], None]) -> None:
    """Push `samples` (16 kHz) in chunks of `chunk_s` at `speed` times real time, stepping whenever the
    last step is done (it takes all that arrived meanwhile); `speed` 0: each chunk at once, then a step.
    `report` gets each update and the seconds pushed when it came."""
    size = max(1, round(chunk_s * SAMPLE_RATE))
    if speed <= 0:
        for start in range(0, len(samples), size):
            session.push(samples[start : start + size])
            report(session.step(), session.received_s)
        report(session.finish(), session.received_s)
        return
    feed = LiveFeed(session, report)
    began = time.monotonic()
    for start in range(0, len(samples), size):
        end = min(start + size, len(samples))
        time.sleep(max(0.0, began + end / SAMPLE_RATE / speed - time.monotonic()))
        feed.push(samples[start:end])
    feed.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m whisper_core.live",
                                description="Play an audio file as a microphone and print the live text.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("file", help="an audio or video file")
    p.add_argument("--task", default="transcribe", choices=["transcribe", "translate", "both"])
    p.add_argument("--language", default=None, help="the spoken language (default: detect from the first speech)")
    p.add_argument("--speed", type=float, default=1.0, help="times real time; 0: as fast as decoding goes")
    p.add_argument("--chunk_s", type=float, default=0.5, help="seconds of audio in each push")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per commit, then a last 'done' line")
    return p


def _printer(jsonl: bool) -> Callable[[Update, float], None]:
    from .writers import format_timestamp

    def report(update: Update, fed_s: float) -> None:
        for task, lines in update.committed.items():
            for line in lines:
                if jsonl:
                    row = {"task": task, "start": line["start"], "end": line["end"], "text": line["text"],
                           "fed_s": round(fed_s, 3), "words": line["words"]}
                    print(json.dumps(row, ensure_ascii=False), flush=True)
                else:
                    print(f"[{format_timestamp(line['start'])} --> {format_timestamp(line['end'])}] {task}: "
                          f"{line['text']}", flush=True)

    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .audio import load_audio
    from .options import OptionsError, make_options
    from .speech_model import load_model

    if not Path(args.file).is_file():
        print(f"error: {args.file}: no such file", file=sys.stderr)
        return 2
    if args.chunk_s <= 0 or args.speed < 0:
        print("error: --chunk_s must be above 0 and --speed 0 or above", file=sys.stderr)
        return 2
    try:
        options = make_options(language=args.language, temperature=0.0)
        samples = load_audio(args.file)
    except OptionsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError:
        print(f"error: {args.file}: not a readable audio file", file=sys.stderr)
        return 2
    service = TranscriptionService(load_model())
    plan = service.model.plan(args.task)
    if not plan.tasks:
        print(f"error: this model cannot translate: {plan.cannot_translate}", file=sys.stderr)
        return 2
    session = LiveSession(service, plan, options)
    play(session, samples, chunk_s=args.chunk_s, speed=args.speed, report=_printer(args.jsonl))
    texts = {task: session.text(task) for task in ("transcribe", "translate")}
    if args.jsonl:
        print(json.dumps({"done": True, **texts}, ensure_ascii=False), flush=True)
    else:
        print(*(text for text in texts.values() if text), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
