"""Accuracy against human references: `python -m whisper_core.accuracy AUDIO_DIR` reads AUDIO_DIR's
manifest.json (file, language, reference, english, reference_kind per entry), transcribes and translates
every file in each decoding mode (sequential as openai-whisper decodes, sequential with the voice detector,
batched), and prints WER (CER for languages written without spaces) per file, per language and pooled,
after the normalizer the Whisper paper uses for each language, and how closely the batched mode's word
times follow the sequential ones; the last line names the normalizers."""

from __future__ import annotations

import argparse
import difflib
import json
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

from .metrics import error_counts, normalizer_name, rate
from .speech_model import load_model

TASKS = ("transcribe", "translate")
MODES = {  # name -> the options that make it
    "sequential": {},
    "sequential, VAD": {"vad_filter": True},
    "batched": {"batch_size": 8},
}
WORD_TIME_TOLERANCE_S = 0.1


def _reference(entry: dict, task: str) -> tuple[str | None, str]:
    """The reference text for `task` (None when the manifest has none) and the language it is in."""
    if task == "transcribe":
        return entry["reference"], entry["language"]
    return entry.get("english"), "en"


def word_time_agreement(a: dict, b: dict, tolerance: float = WORD_TIME_TOLERANCE_S) -> tuple[int, int]:
    """(words both results write whose start and end agree within `tolerance`, words both write): the words
    are matched in order, by their normalized spelling."""
    words_a = [w for s in a["segments"] for w in s.get("words", [])]
    words_b = [w for s in b["segments"] for w in s.get("words", [])]
    matcher = difflib.SequenceMatcher(None, [w["word"].strip().lower() for w in words_a],
                                      [w["word"].strip().lower() for w in words_b], autojunk=False)
    pairs = [(words_a[m.a + i], words_b[m.b + i]) for m in matcher.get_matching_blocks() for i in range(m.size)]
    close = sum(abs(x["start"] - y["start"]) <= tolerance and abs(x["end"] - y["end"]) <= tolerance
                for x, y in pairs)
    return close, len(pairs)


def _cell(scores: list[float] | None) -> str:
    return f"{100 * sum(scores) / len(scores):.1f}" if scores else "—"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio_dir", type=Path)
    parser.add_argument("--beam_size", type=int, default=None, help="default: greedy")
    parser.add_argument("--max_duration", type=float, default=None, help="skip longer files")
    parser.add_argument("--int8", action="store_true", help="the CPU's int8 mode")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), metavar="MODE",
                        help=f"decoding modes to score, of: {', '.join(repr(m) for m in MODES)}")
    args = parser.parse_args(argv)
    entries = json.loads((args.audio_dir / "manifest.json").read_text())
    model = load_model(int8=args.int8)
    modes = [m for m in MODES if m in args.modes]
    columns = [(mode, task) for mode in modes for task in TASKS]
    rows = []
    scored_by: dict[str, set[str]] = defaultdict(set)  # normalizer -> languages it scored
    per_language: dict[tuple[str, str, str], list[float]] = defaultdict(list)  # (language, mode, task)
    pooled: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # (mode, task) -> [edits, units]
    # (sequential mode, files compared) -> [close, both]
    agreement: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for entry in entries:
        if args.max_duration and entry["duration_s"] > args.max_duration:
            continue
        path = str(args.audio_dir / entry["file"])
        results = {mode: model.transcribe_and_translate(path, temperature=0.0, beam_size=args.beam_size,
                                                        word_timestamps=True, **MODES[mode]) for mode in modes}
        cells = []
        for mode, task in columns:
            text = results[mode][task]["text"]
            if entry["language"] is None:  # no speech: show what was written, if anything
                cells.append(repr(text.strip()[:40]))
                continue
            reference, language = _reference(entry, task)
            if reference is None:
                cells.append("—")
                continue
            edits, units = error_counts(reference, text, language)
            scored_by[normalizer_name(language)].add(language)
            score = rate(edits, units)
            cells.append(f"{100 * score:.1f}")
            if entry["reference_kind"] == "human":
                per_language[(entry["language"], mode, task)].append(score)
                pooled[(mode, task)][0] += edits
                pooled[(mode, task)][1] += units
        if "batched" in results and entry["language"] is not None:
            for mode in (m for m in modes if m != "batched"):
                close, both = word_time_agreement(results[mode]["transcribe"], results["batched"]["transcribe"])
                scopes = ["the human-referenced files", "every file with speech"]
                if entry["reference_kind"] != "human":
                    scopes = scopes[1:]
                for scope in scopes:
                    agreement[(mode, scope)][0] += close
                    agreement[(mode, scope)][1] += both
        rows.append(f"| {entry['file']} | {entry['language'] or '—'} | {entry['reference_kind']} | "
                    + " | ".join(cells) + " |")
    header = " | ".join(f"{task}, {mode}" for mode, task in columns)
    print(f"| file | language | reference | {header} |")
    print("|---" * (3 + len(columns)) + "|")
    print("\n".join(rows))
    print(f"\n| language | {header} |")
    print("|---" * (1 + len(columns)) + "|")
    for language in sorted({key[0] for key in per_language}):
        print(f"| {language} | " + " | ".join(_cell(per_language.get((language, m, t))) for m, t in columns) + " |")
    means = [_cell([s for (_, m, t), group in per_language.items() if (m, t) == column for s in group])
             for column in columns]
    print("| mean of files | " + " | ".join(means) + " |")
    cells = [f"{100 * rate(*pooled[column]):.1f}" if pooled[column][1] else "—" for column in columns]
    print("| all words (pooled) | " + " | ".join(cells) + " |")
    for (mode, scope), (close, both) in agreement.items():
        print(f"\nWord times, batched against {mode}, on {scope}: {close} of {both} words both write "
              f"({100 * rate(close, both):.1f} %) start and end within {WORD_TIME_TOLERANCE_S} s.")
    names = "; ".join(f"{name} for {', '.join(sorted(languages))}" for name, languages in sorted(scored_by.items()))
    print(f"\nNormalized by whisper-normalizer {version('whisper-normalizer')} ({names}), "
          f"scored by jiwer {version('jiwer')}.")


if __name__ == "__main__":
    main()
