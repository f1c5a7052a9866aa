"""The object users hold: a loaded network with its tokenizer, and the calls people make on it."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import heap
from . import transcribe as longform
from .audio import N_SAMPLES, load_audio
from .chunks import ChunkedRun, chunk_map, speech_chunks
from .decoding import DecodingOptions, DecodingResult, decode, detect_language
from .kernels import encode_windows
from .loading import load_network, translation_unavailable
from .options import TASKS, OptionsError, TranscribeOptions, make_options
from .tasks import TaskPlan
from .timing import add_word_timestamps
from .transcribe import Audio, Job, ProgressCallback
from .vad import SpeechMap, keep_speech

AudioInput = str | Path | np.ndarray | torch.Tensor
# Batched long-form names the language from the first chunk when it is this long.
LANGUAGE_FROM_CHUNK_S = 10.0


class SpeechModel:
    """A Whisper checkpoint loaded once, ready to transcribe and translate."""

    loads = 0  # models loaded in this process (the app must load one, once)

    def __init__(
        self, name: str | None = None, device: str | None = None, download_root: str | Path | None = None,
        *, int8: bool = False,
    ):
        self.net, self.tokenizer, self.config = load_network(name, device, download_root, int8=int8)
        heap.reuse_freed_memory()
        SpeechModel.loads += 1
        self.name = name or "base"

    @property
    def device(self) -> torch.device:
        return self.net.device

    @property
    def is_multilingual(self) -> bool:
        return self.tokenizer.is_multilingual

    @property
    def translation_unavailable(self) -> str | None:
        """Why this model cannot translate (English-only, turbo), or None when it can."""
        return translation_unavailable(self.net.dims)

    @property
    def can_translate(self) -> bool:
        return self.translation_unavailable is None

    def _not_translated(self) -> dict:
        """The result of a translation this model cannot do: no text, and the reason, rather than a
        transcript passed off as English."""
        language = None if self.is_multilingual else "en"
        return {"text": "", "segments": [], "language": language, "language_probs": None,
                "translation_unavailable": self.translation_unavailable}

    def prepare(self, audio: AudioInput, *, vad_filter: bool = False) -> Audio:
        """Decode (for a path), cut out non-speech when asked, and compute the log-mel once; the result
        can feed several jobs."""
        if isinstance(audio, str | Path):
            audio = load_audio(str(audio))
        return Audio(audio, self.net.dims.n_mels, self.device, vad_filter=vad_filter)

    @property
    def alignment_heads(self) -> list[tuple[int, int]]:
        """The cross-attention heads that follow the speech (from the checkpoint); without them, every
        head of the upper half of the decoder, as the reference does."""
        heads = self.config.get("alignment_heads")
        if heads:
            return [(int(layer), int(head)) for layer, head in heads]
        dims = self.net.dims
        return [(layer, head) for layer in range(dims.n_text_layer // 2, dims.n_text_layer)
                for head in range(dims.n_text_head)]

    def plan(self, mode: str | Sequence[str], *, translate_english: bool = False) -> TaskPlan:
        """Which of the asked tasks this model runs (see `TaskPlan`); raises ValueError for a wrong mode."""
        return TaskPlan.make(mode, self.translation_unavailable, translate_english=translate_english)

    def job(self, audio: Audio, options: TranscribeOptions, progress: ProgressCallback | None = None, *,
            one_pass: bool = False, max_windows: int | None = None, text_so_far: tuple[int, ...] = ()) -> Job:
        """A long-form run of `options.task` to step with others (see `transcribe.run`)."""
        aligner = None
        if options.word_timestamps:
            aligner = functools.partial(add_word_timestamps, net=self.net, alignment_heads=self.alignment_heads)
        return Job(audio, options, self.tokenizer, progress, aligner=aligner, one_pass=one_pass,
                   max_windows=max_windows, text_so_far=text_so_far)

    def jobs(self, audio: Audio, plan: TaskPlan, options: TranscribeOptions,
             progress: ProgressCallback | None = None) -> list[Job]:
        """One job for each task of the plan, over the same prepared audio."""
        return [self.job(audio, options.for_task(task), progress) for task in plan.tasks]

    def run(self, audio: AudioInput, plan: TaskPlan, options: TranscribeOptions,
            progress: ProgressCallback | None = None) -> dict[str, dict | None]:
        """The plan's tasks on `audio`, here and now (the service does the same for many callers at once):
        {task: result}, None for a task not run. Both tasks advance in lockstep: a window both are at is
        encoded once, and their decodes share batches."""
        if options.batch_size:
            return self._run_chunked(audio, plan, options, progress)
        jobs = self.jobs(self.prepare(audio, vad_filter=options.vad_filter), plan, options, progress)
        if plan.depends_on_language:
            longform.detect_languages(self.net, jobs)
            jobs = [job for job in jobs if plan.runs(job.options.task, job.language)]
        results: dict[str, dict | None] = dict.fromkeys(TASKS)
        results.update(zip([job.options.task for job in jobs], longform.run(self.net, jobs), strict=True))
        return results

    def chunked(self, audio: AudioInput, plan: TaskPlan, options: TranscribeOptions,
                progress: ProgressCallback | None = None) -> ChunkedRun:
        """The jobs of batched long-form: one per chunk of speech and task, each chunk decoded on its own
        (no previous-text prompt; the initial prompt kept), in the language of the first speech unless one
        is given, or each chunk in its own with `language_per_chunk`. Runs the voice detector and the
        log-mels; the network waits for `ChunkedRun.admit`."""
        samples = load_audio(str(audio)) if isinstance(audio, str | Path) else audio
        samples = samples.cpu().numpy() if torch.is_tensor(samples) else np.asarray(samples, dtype=np.float32)
        spans = speech_chunks(samples)
        run = ChunkedRun(spans, plan, options.batch_size, progress)
        each = dataclasses.replace(options, condition_on_previous_text=False, vad_filter=False)
        for chunk, span in enumerate(spans):
            prepared = Audio(samples, self.net.dims.n_mels, self.device, speech=chunk_map(span, len(samples)),
                             silence_padded=True)
            run.jobs[chunk] = [self.job(prepared, each.for_task(task), run.reporter(chunk), one_pass=True)
                               for task in plan.tasks]
        if spans and options.language is None and self.is_multilingual and not options.language_per_chunk:
            first = run.jobs[0][0].audio
            if first.duration < LANGUAGE_FROM_CHUNK_S:  # a word or two: the first 30 s of speech instead
                speech = keep_speech(samples, SpeechMap(tuple(spans), len(samples)))[:N_SAMPLES]
                first = Audio(speech, self.net.dims.n_mels, self.device)
            run.language_source = first  # the first chunk's encoding then serves its decode too
        return run

    def _run_chunked(self, audio: AudioInput, plan: TaskPlan, options: TranscribeOptions,
                     progress: ProgressCallback | None) -> dict[str, dict | None]:
        """`run` in batched mode: up to `options.batch_size` chunks step together, earliest first; as one
        finishes the next takes its place."""
        run = self.chunked(audio, plan, options, progress)
        run.admit(self.net)
        while not run.done:
            longform.step(self.net, run.ready())
        return run.results()

    def transcribe(self, audio: AudioInput, *, progress: ProgressCallback | None = None, **options) -> dict:
        """Transcribe (or, with task="translate", translate to English) audio of any length.

        Takes openai-whisper's keywords: task, language, temperature, beam_size, best_of, patience,
        length_penalty, initial_prompt, condition_on_previous_text, compression_ratio_threshold,
        logprob_threshold, no_speech_threshold, suppress_tokens, suppress_blank, without_timestamps,
        word_timestamps, prepend_punctuations, append_punctuations, vad_filter,
        hallucination_silence_threshold, batch_size (OptionsError for a wrong one).
        Returns {"text", "segments", "language", "language_probs"}; a translation that this model cannot
        do returns no text and says why in "translation_unavailable".
        """
        parsed = make_options(**options)
        result = self.run(audio, self.plan([parsed.task]), parsed, progress)[parsed.task]
        return self._not_translated() if result is None else result

    def transcribe_and_translate(
        self, audio: AudioInput, *, progress: ProgressCallback | None = None, **options
    ) -> dict:
        """Both tasks in one run, each with the result it would get alone (English speech is translated
        too, as openai-whisper would); takes `transcribe`'s keywords but task."""
        if "task" in options:
            raise OptionsError("transcribe_and_translate runs both tasks; do not pass task")
        results = self.run(audio, self.plan("both", translate_english=True), make_options(**options), progress)
        return {"transcribe": results["transcribe"], "translate": results["translate"] or self._not_translated()}

    @torch.inference_mode()
    def detect_language(self, audio: AudioInput) -> tuple[str, dict[str, float]]:
        """The language of the first 30 s and the probability of each language."""
        prepared = self.prepare(audio)
        from .audio import N_FRAMES, pad_or_trim

        mel = pad_or_trim(prepared.mel, N_FRAMES)[None].to(self.net.dtype)
        return detect_language(self.net, self.net.encoder(mel), self.tokenizer)[0]

    @torch.inference_mode()
    def decode(self, mel: torch.Tensor, options: DecodingOptions) -> list[DecodingResult]:
        """Decode 30-s log-mel windows [batch, n_mels, 3000] with one set of options."""
        features = encode_windows(self.net.encoder, mel.to(self.device, self.net.dtype))
        return decode(self.net, features, options, self.tokenizer)


def load_model(
    name: str | None = None, device: str | None = None, download_root: str | Path | None = None,
    *, int8: bool = False,
) -> SpeechModel:
    """Load a model: no argument gives the bundled multilingual base, offline. `name` is a published name
    (tiny ... large-v3-turbo, downloaded into `download_root`, default ~/.cache/whisper), a .pt file, a
    CTranslate2 or Transformers directory, or a Hugging Face repository id. `int8=True` (CPU only)
    quantizes the linear layers: faster and smaller, with a slightly different output (see README)."""
    return SpeechModel(name, device, download_root, int8=int8)
