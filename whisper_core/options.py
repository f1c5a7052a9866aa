"""The long-form settings as one frozen object, built and checked once at the edge (the page, the API,
the command line, a library call) and passed down as it is: the engine never parses keywords."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .decoding import DecodingOptions, check_options
from .timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS
from .tokenizer import normalize_language

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TASKS = ("transcribe", "translate")


class OptionsError(ValueError):
    """Options a user gave that cannot work together; the message says which and why."""


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
    sample_len: int | None = None  # most tokens a window's decode writes; None: half the text context
    word_timestamps: bool = False
    prepend_punctuations: str = PREPEND_PUNCTUATIONS
    append_punctuations: str = APPEND_PUNCTUATIONS
    vad_filter: bool = False  # skip stretches without speech (used when the audio is prepared)
    hallucination_silence_threshold: float | None = None  # seconds; needs word_timestamps
    batch_size: int | None = None  # decode the speech cut at its pauses, this many chunks at once
    language_per_chunk: bool = False  # batched: each chunk in the language it is heard in (a talk that switches)

    def for_task(self, task: str) -> TranscribeOptions:
        """The same settings for another task (the two tasks of one input share everything else)."""
        return self if task == self.task else dataclasses.replace(self, task=task)

    def decoding_options(self, temperature: float, prompt: list[int], language: str | None) -> DecodingOptions:
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
            sample_len=self.sample_len,
        )


def make_options(**kwargs) -> TranscribeOptions:
    """TranscribeOptions from openai-whisper-style keywords, checked: a single temperature becomes a ladder
    of one, `beam_size=1` means greedy, a language name becomes its code. Raises OptionsError."""
    unknown = set(kwargs) - {f.name for f in dataclasses.fields(TranscribeOptions)}
    if unknown:
        raise OptionsError(f"unknown option(s): {', '.join(sorted(unknown))}")
    temperature = kwargs.pop("temperature", TEMPERATURES)
    if isinstance(temperature, int | float):
        temperature = (temperature,)
    try:
        kwargs["temperature"] = tuple(float(t) for t in temperature)
        if "language" in kwargs:
            kwargs["language"] = normalize_language(kwargs["language"])
    except (TypeError, ValueError) as e:
        raise OptionsError(str(e)) from None
    if kwargs.get("beam_size") == 1:
        kwargs["beam_size"] = None
    options = TranscribeOptions(**kwargs)
    check(options)
    return options


def check(options: TranscribeOptions) -> None:
    """Reject what would fail later, deep in a decode, with a message a user can act on."""
    if options.task not in TASKS:
        raise OptionsError(f"task must be 'transcribe' or 'translate', not {options.task!r}")
    if not options.temperature:
        raise OptionsError("temperature needs at least one value")
    if options.beam_size is not None and options.beam_size < 1:
        raise OptionsError(f"beam_size must be 1 or more, not {options.beam_size}")
    if options.batch_size is not None and options.batch_size < 1:
        raise OptionsError(f"batch_size must be 1 or more, not {options.batch_size}")
    if options.language_per_chunk and not options.batch_size:
        raise OptionsError("language_per_chunk needs batch_size (the speech cut into chunks)")
    if options.language_per_chunk and options.language is not None:
        raise OptionsError("language_per_chunk detects each chunk's language; give no language with it")
    if options.best_of is not None and options.best_of < 1:
        raise OptionsError(f"best_of must be 1 or more, not {options.best_of}")
    for temperature in options.temperature:
        if temperature < 0:
            raise OptionsError(f"temperatures must not be negative, not {temperature}")
        try:
            check_options(options.decoding_options(temperature, [], options.language))
        except ValueError as e:
            raise OptionsError(str(e)) from None
