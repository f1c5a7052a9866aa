"""Accuracy against human references: `python -m whisper_core.accuracy AUDIO_DIR` reads AUDIO_DIR's
manifest.json (file, language, reference, english, reference_kind per entry), transcribes and translates
every file, and prints WER (CER for languages written without spaces) per file and per language, with the
voice detector off (the reference's behaviour) and on."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from .metrics import error_rate
from .speech_model import load_model


def _score(entry: dict, result: dict, task: str) -> float | None:
    reference = entry["reference"] if task == "transcribe" else entry.get("english")
    if reference is None:
        return None
    return error_rate(reference, result[task]["text"], entry["language"] if task == "transcribe" else "en")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio_dir", type=Path)
    parser.add_argument("--beam_size", type=int, default=None, help="default: greedy")
    parser.add_argument("--max_duration", type=float, default=None, help="skip longer files")
    args = parser.parse_args(argv)
    entries = json.loads((args.audio_dir / "manifest.json").read_text())
    model = load_model()
    rows = []
    per_language: dict[tuple[str, str, bool], list[float]] = defaultdict(list)
    for entry in entries:
        if args.max_duration and entry["duration_s"] > args.max_duration:
            continue
        cells = []
        for vad in (False, True):
            both = model.transcribe_and_translate(str(args.audio_dir / entry["file"]), temperature=0.0,
                                                  beam_size=args.beam_size, vad_filter=vad)
            for task in ("transcribe", "translate"):
                if entry["language"] is None:  # no speech: show what was written, if anything
                    cells.append(repr(both[task]["text"].strip()[:40]))
                    continue
                score = _score(entry, both, task)
                cells.append("—" if score is None else f"{100 * score:.1f}")
                if score is not None and entry["reference_kind"] == "human":
                    per_language[(entry["language"], task, vad)].append(score)
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


if __name__ == "__main__":
    main()
