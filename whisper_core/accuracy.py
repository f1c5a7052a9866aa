"""Accuracy against human references: `python -m whisper_core.accuracy AUDIO_DIR` reads AUDIO_DIR's
manifest.json (file, language, reference, english, reference_kind per entry), transcribes and translates
every file, and prints WER (CER for languages written without spaces) per file and per language, with the
voice detector off (the reference's behaviour) and on, after the normalizer the Whisper paper uses for each
language; the last line names them."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

from .metrics import error_counts, normalizer_name, rate
from .speech_model import load_model


def _reference(entry: dict, task: str) -> tuple[str | None, str]:
    """The reference text for `task` (None when the manifest has none) and the language it is in."""
    if task == "transcribe":
        return entry["reference"], entry["language"]
    return entry.get("english"), "en"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio_dir", type=Path)
    parser.add_argument("--beam_size", type=int, default=None, help="default: greedy")
    parser.add_argument("--max_duration", type=float, default=None, help="skip longer files")
    parser.add_argument("--int8", action="store_true", help="the CPU's int8 mode")
    parser.add_argument("--vad", choices=["off", "on", "both"], default="both", help="the voice detector")
    args = parser.parse_args(argv)
    entries = json.loads((args.audio_dir / "manifest.json").read_text())
    model = load_model(int8=args.int8)
    rows = []
    scored_by: dict[str, set[str]] = defaultdict(set)  # normalizer -> languages it scored
    per_language: dict[tuple[str, str, bool], list[float]] = defaultdict(list)
    pooled: dict[tuple[str, bool], list[int]] = defaultdict(lambda: [0, 0])  # (task, vad) -> [edits, units]
    for entry in entries:
        if args.max_duration and entry["duration_s"] > args.max_duration:
            continue
        cells = []
        for vad in (False, True):
            if args.vad != "both" and vad != (args.vad == "on"):
                cells += ["", ""]
                continue
            both = model.transcribe_and_translate(str(args.audio_dir / entry["file"]), temperature=0.0,
                                                  beam_size=args.beam_size, vad_filter=vad)
            for task in ("transcribe", "translate"):
                if entry["language"] is None:  # no speech: show what was written, if anything
                    cells.append(repr(both[task]["text"].strip()[:40]))
                    continue
                reference, language = _reference(entry, task)
                if reference is None:
                    cells.append("—")
                    continue
                edits, units = error_counts(reference, both[task]["text"], language)
                scored_by[normalizer_name(language)].add(language)
                score = rate(edits, units)
                cells.append(f"{100 * score:.1f}")
                if entry["reference_kind"] == "human":
                    per_language[(entry["language"], task, vad)].append(score)
                    pooled[(task, vad)][0] += edits
                    pooled[(task, vad)][1] += units
        name = f"| {entry['file']} | {entry['language'] or '—'} | {entry['reference_kind']} | "
        rows.append(name + " | ".join(cells) + " |")
    print("| file | language | reference | transcript | translation | transcript, VAD | translation, VAD |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| language | transcript | translation | transcript, VAD | translation, VAD |")
    print("|---|---|---|---|---|")
    for language in sorted({key[0] for key in per_language}):
        cells = []
        for vad in (False, True):
            for task in ("transcribe", "translate"):
                scores = per_language.get((language, task, vad))
                cells.append(f"{100 * sum(scores) / len(scores):.1f}" if scores else "—")
        print(f"| {language} | " + " | ".join(cells) + " |")
    cells = []
    for vad in (False, True):
        for task in ("transcribe", "translate"):
            scores = [s for (_, t, v), group in per_language.items() if t == task and v == vad for s in group]
            cells.append(f"{100 * sum(scores) / len(scores):.1f}" if scores else "—")
    print("| mean of files | " + " | ".join(cells) + " |")
    cells = [f"{100 * rate(*pooled[(task, vad)]):.1f}" if pooled[(task, vad)][1] else "—"
             for vad in (False, True) for task in ("transcribe", "translate")]
    print("| all words (pooled) | " + " | ".join(cells) + " |")
    names = "; ".join(f"{name} for {', '.join(sorted(languages))}" for name, languages in sorted(scored_by.items()))
    print(f"\nNormalized by whisper-normalizer {version('whisper-normalizer')} ({names}), "
          f"scored by jiwer {version('jiwer')}.")


if __name__ == "__main__":
    main()
