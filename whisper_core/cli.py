"""The command line: `python -m whisper_core FILE_OR_URL ... --task translate --output_format srt`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS
from .writers import FORMATS, SubtitleLayout, to_bilingual, write_result

if TYPE_CHECKING:  # for the annotations; the modules are imported where they are used
    import numpy as np

    from .options import TranscribeOptions
    from .tasks import TaskPlan


def _optional_int(text: str) -> int | None:
    return None if text == "None" else int(text)


def _optional_float(text: str) -> float | None:
    return None if text == "None" else float(text)


def _str2bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, not {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m whisper_core",
        description="Transcribe speech, or translate it to English, from files or URLs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("audio", nargs="+", help="audio or video files, or http(s) URLs (YouTube and other sites)")
    p.add_argument("--output_dir", "-o", default=".", help="directory for the output files")
    p.add_argument("--verbose", type=_str2bool, default=True, help="print each segment as it is decoded")
    add_transcribe_arguments(p)
    return p


def add_transcribe_arguments(p: argparse.ArgumentParser) -> None:
    """The options that decide what is decoded and written, shared with `python -m whisper_core.batch` so that
    both commands read them alike."""
    # fmt: off
    p.add_argument("--model", default="base", help="a name (tiny ... large-v3-turbo; 'base' is bundled), a .pt "
                   "file, a CTranslate2 or Transformers directory, or a Hugging Face repository id")
    p.add_argument("--model_dir", default=None, help="where downloaded models are kept (default: ~/.cache/whisper)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("--output_format", "-f", default="all", choices=[*FORMATS, "all"], help="output format")
    p.add_argument("--task", default="transcribe", choices=["transcribe", "translate", "both"],
                   help="transcribe, translate to English, or both (adds bilingual subtitles)")
    p.add_argument("--language", default=None, help="the spoken language (default: detect)")
    p.add_argument("--temperature", type=float, default=0, help="the first sampling temperature")
    p.add_argument("--temperature_increment_on_fallback", type=_optional_float, default=0.2,
                   help="step up the temperature by this much when a window fails the thresholds")
    p.add_argument("--best_of", type=_optional_int, default=5, help="samples to pick from above temperature 0")
    p.add_argument("--beam_size", type=_optional_int, default=5, help="beams at temperature 0 (1: greedy)")
    p.add_argument("--patience", type=float, default=None, help="beam search patience")
    p.add_argument("--length_penalty", type=float, default=None, help="length penalty alpha (None: length)")
    p.add_argument("--suppress_tokens", default="-1", help="token ids never written; -1: non-speech symbols")
    p.add_argument("--initial_prompt", default=None, help="text to condition the first window on")
    p.add_argument("--condition_on_previous_text", type=_str2bool, default=True,
                   help="feed each window the text before it")
    p.add_argument("--compression_ratio_threshold", type=_optional_float, default=2.4,
                   help="fall back to sampling above this gzip compression ratio")
    p.add_argument("--logprob_threshold", type=_optional_float, default=-1.0,
                   help="fall back to sampling below this mean log-probability")
    p.add_argument("--no_speech_threshold", type=_optional_float, default=0.6,
                   help="skip a window as silent above this no-speech probability (and low log-prob)")
    p.add_argument("--word_timestamps", type=_str2bool, default=False, help="time every word")
    p.add_argument("--prepend_punctuations", default=PREPEND_PUNCTUATIONS,
                   help="with word timestamps: marks joined to the next word")
    p.add_argument("--append_punctuations", default=APPEND_PUNCTUATIONS,
                   help="with word timestamps: marks joined to the previous word")
    p.add_argument("--highlight_words", type=_str2bool, default=False,
                   help="underline each word as it is spoken in srt and vtt (needs --word_timestamps True)")
    p.add_argument("--max_line_width", type=_optional_int, default=None,
                   help="characters per subtitle line (needs --word_timestamps True)")
    p.add_argument("--max_line_count", type=_optional_int, default=None,
                   help="lines per subtitle cue (needs --word_timestamps True)")
    p.add_argument("--max_words_per_line", type=_optional_int, default=None,
                   help="words per subtitle line (needs --word_timestamps True)")
    p.add_argument("--vad_filter", type=_str2bool, default=False,
                   help="skip stretches without speech (voice activity detection) before decoding")
    p.add_argument("--batch_size", type=_optional_int, default=None,
                   help="batched long-form: cut the speech at its pauses (voice detection) and decode this many "
                   "30-s chunks at once, each on its own")
    p.add_argument("--language_per_chunk", type=_str2bool, default=False,
                   help="with --batch_size: detect each chunk's language (a talk that switches language)")
    p.add_argument("--hallucination_silence_threshold", type=_optional_float, default=None,
                   help="with word timestamps: drop text that looks invented after this many seconds of silence")
    p.add_argument("--int8", type=_str2bool, default=False,
                   help="CPU only: int8 linear layers, faster and smaller, output may differ slightly")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    # fmt: on


def _temperatures(start: float, increment: float | None) -> tuple[float, ...]:
    if not increment:
        return (start,)
    steps = int((1.0 - start) / increment + 1e-6) + 1
    return tuple(round(start + i * increment, 6) for i in range(steps))


def layout_from_args(args: argparse.Namespace) -> SubtitleLayout:
    """How subtitle cues are cut; raises OptionsError when a layout flag is given without the word times it
    cuts by."""
    from .options import OptionsError

    layout = SubtitleLayout(args.max_line_width, args.max_line_count, args.max_words_per_line, args.highlight_words)
    if layout.uses_words and not args.word_timestamps:
        raise OptionsError("--max_line_width, --max_line_count, --max_words_per_line and --highlight_words "
                           "need --word_timestamps True")
    return layout


def options_from_args(args: argparse.Namespace) -> TranscribeOptions:
    """The decoding options the flags ask for, checked (OptionsError)."""
    from .options import make_options

    return make_options(
        language=args.language,
        temperature=_temperatures(args.temperature, args.temperature_increment_on_fallback),
        best_of=args.best_of, beam_size=args.beam_size, patience=args.patience,
        length_penalty=args.length_penalty, suppress_tokens=args.suppress_tokens,
        initial_prompt=args.initial_prompt, condition_on_previous_text=args.condition_on_previous_text,
        compression_ratio_threshold=args.compression_ratio_threshold,
        logprob_threshold=args.logprob_threshold, no_speech_threshold=args.no_speech_threshold,
        word_timestamps=args.word_timestamps, prepend_punctuations=args.prepend_punctuations,
        append_punctuations=args.append_punctuations, vad_filter=args.vad_filter,
        hallucination_silence_threshold=args.hallucination_silence_threshold, batch_size=args.batch_size,
        language_per_chunk=args.language_per_chunk,
    )


def safe_stem(text: str) -> str:
    """A file name stem from a file's stem or a link's title: only letters, digits and `-_. `."""
    return "".join(c if c.isalnum() or c in "-_. " else "_" for c in text).strip() or "output"


def load_input(item: str) -> tuple[np.ndarray, str]:
    """The audio and a file stem for its outputs; media errors become one line for the user."""
    from .media import load_file, load_url

    link = "://" in item  # any scheme goes to load_url, which says which ones it fetches
    media = load_url(item) if link else load_file(item)
    return media.audio, safe_stem((media.title or "download") if link else Path(item).stem)


def write_outputs(results: dict[str, dict | None], plan: TaskPlan, out_dir: Path, stem: str, output_format: str,
                  layout: SubtitleLayout) -> list[Path]:
    """Write one input's files and return them: `stem.<fmt>` for one task; for both, `stem.transcribe.<fmt>`
    and, when there is a translation, `stem.translate.<fmt>` and `stem.bilingual.srt`."""
    transcript, translation = results["transcribe"], results["translate"]
    if len(plan.requested) == 1:
        return write_result(transcript or translation, output_format, out_dir, stem, layout)
    written = write_result(transcript, output_format, out_dir, f"{stem}.transcribe", layout)
    if plan.missing_translation(transcript["language"]) is None:
        written += write_result(translation, output_format, out_dir, f"{stem}.translate", layout)
        bilingual = out_dir / f"{stem}.bilingual.srt"
        bilingual.write_text(to_bilingual(transcript, translation), encoding="utf-8")
        written.append(bilingual)
    return written


def translation_note(results: dict[str, dict | None], plan: TaskPlan) -> str | None:
    """Why a run of both tasks wrote no translation (the model cannot, or the speech is English), or None."""
    from .tasks import ENGLISH, UNSUPPORTED

    if len(plan.requested) == 1:
        return None
    missing = plan.missing_translation(results["transcribe"]["language"])
    if missing == UNSUPPORTED:
        return f"no translation: {plan.cannot_translate}"
    if missing == ENGLISH:
        return "no translation: the speech is English"
    return None


def _printer(verbose: bool):
    from .writers import format_timestamp

    def show(task: str, segments: list[dict], fraction: float) -> None:  # noqa: ARG001
        for s in segments:
            if s["text"].strip():
                print(f"[{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}] {s['text'].strip()}",
                      flush=True)

    return show if verbose else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from .errors import CheckpointError
    from .media import MediaError
    from .options import OptionsError
    from .speech_model import load_model

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        layout = layout_from_args(args)
        options = options_from_args(args)
        model = load_model(args.model, args.device, download_root=args.model_dir, int8=args.int8)
    except (OptionsError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    plan = model.plan(args.task)
    if not plan.tasks:
        print(f"error: this model cannot translate: {plan.cannot_translate}", file=sys.stderr)
        return 2
    failures = 0
    out_dir = Path(args.output_dir)
    for item in args.audio:
        try:
            audio, stem = load_input(item)
        except MediaError as e:
            print(f"error: {item}: {e}", file=sys.stderr)
            failures += 1
            continue
        results = model.run(audio, plan, options, _printer(args.verbose and len(plan.requested) == 1))
        write_outputs(results, plan, out_dir, stem, args.output_format, layout)
        note = translation_note(results, plan)
        if note:
            print(f"note: {item}: {note}", file=sys.stderr)
        if args.verbose and len(plan.requested) > 1:
            print(*(r["text"].strip() for r in (results["transcribe"], results["translate"]) if r), sep="\n")
    return 1 if failures else 0
