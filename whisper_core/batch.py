"""`python -m whisper_core.batch INPUT... --output_dir DIR`: transcribe many inputs on one machine, and pick
up where a stopped run left off.

An INPUT is an audio or video file; a folder, walked recursively for audio and video files by their extension
(hidden files and folders left out), in sorted order; a `.txt` or `.list` file of links, one a line (blank
lines and lines starting with `#` skipped, any other line that is no link a bad argument); or a link. Links
are fetched by the same intake, behind the same address guard, as on the page and in `python -m whisper_core`.

All inputs are decoded in this process by one shared `TranscriptionService`, while the next inputs' media are
read; with `--parallel N`, N inputs are in the service at once and their windows share the decoder's batches.

Every input gets the files `python -m whisper_core INPUT` writes with the same options, under the same names,
written by the same code (`cli.write_outputs`). A file found in a folder goes into the same subfolder of DIR
as it has in that folder. Where two inputs would still get one name (x.mp3 beside x.wav, a/x.mp3 and b/x.mp3
given as files, two links with one title, an input that an earlier run recorded under that name), the one
that asks later gets `-` and 8 hex digits of its input's sha256 after the stem, so nothing is overwritten.
Names are compared regardless of letter case, for the file systems that ignore it.

With `--parallel` above 1 the floats of the JSON files (log-probabilities, compression ratios) may differ from
the CLI's in their last digits, as a batch of several inputs is summed in another order; the default, one
input at a time, writes the CLI's bytes.

DIR/manifest.jsonl gets one JSON line (a `Record`: the input, its hash, the options, done or failed, the files
written or the error, seconds of audio and of wall time) per finished input, after its files are written, in
one write that is synced to disk; the last line of an input wins. A rerun skips an input whose last record
is done with the same content hash and options and whose files all exist, and one that failed with the same
hash and options unless `--retry_failed` is given; so a killed run loses only the inputs that were in flight.

With `--address ray://HOST:PORT` (or `auto`, or the cluster's HOST:PORT) the inputs are run on a Ray cluster
instead, with the same manifest, triage and files: see `whisper_core.cluster`. Without it Ray is not imported.

Exit status: 0 when every input is done, 1 when some input failed (in this run, or before and not retried) or
the cluster stopped the job, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NoReturn, TextIO

import numpy as np
import torch

from . import cli
from .audio import SAMPLE_RATE
from .errors import CheckpointError
from .media import MediaError
from .options import OptionsError, TranscribeOptions
from .service import TranscriptionService
from .speech_model import load_model
from .tasks import TaskPlan
from .writers import SubtitleLayout

MANIFEST = "manifest.jsonl"
LINK_LISTS = (".txt", ".list")
MEDIA_SUFFIXES = frozenset({
    ".mp3", ".wav", ".flac", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aiff", ".aif", ".amr", ".mka",
    ".webm", ".mp4", ".m4v", ".mkv", ".mov", ".avi", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp", ".flv",
})
DEFAULT_PARALLEL = 1  # the CLI's exact bytes; more shares batches across inputs
SUFFIX_DIGITS = 8  # of the input's sha256, after a stem another input holds
DONE, FAILED = "done", "failed"
RUN, SKIP, FAILED_BEFORE = "run", "skip", "failed before"  # what a rerun does with an input

# A function that transcribes one input's audio: {task: result or None}. Here the shared service's `submit`.
Engine = Callable[[np.ndarray, TaskPlan, TranscribeOptions], dict[str, dict | None]]


class UsageError(Exception):
    """Bad arguments: one `error:` line and exit status 2, before anything is decoded."""


class ClusterError(Exception):
    """The cluster could not run the job (unreachable, or it gave the job up): one `error:` line and exit
    status 1; the inputs recorded before stay recorded, so the same command goes on later."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m whisper_core.batch",
        description="Transcribe or translate many files, folders and links into one folder; a rerun does "
        "only what is not done yet.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio or video files, folders of them, .txt/.list files of links, or http(s) links")
    p.add_argument("--output_dir", "-o", required=True, help="directory for the output files and manifest.jsonl")
    p.add_argument("--parallel", type=_positive_int, default=DEFAULT_PARALLEL,
                   help="inputs decoded at once, sharing batches (above 1, JSON floats may differ from the CLI's "
                   "in their last digits)")
    p.add_argument("--retry_failed", action="store_true", help="try the inputs that failed before again")
    p.add_argument("--address", default=None,
                   help="run on this Ray cluster (ray://HOST:PORT, HOST:PORT, or auto for the one on this machine)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="with --address: model actors, one model each (default: one per --gpus_per_worker GPUs "
                   "of the cluster; 1 on a cluster without GPUs)")
    p.add_argument("--gpus_per_worker", type=_positive_float, default=None,
                   help="with --address: GPUs each model actor holds where the cluster has GPUs (default: 1)")
    cli.add_transcribe_arguments(p)
    return p


# --- inputs -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """One thing to transcribe. `key` names it in the manifest: a file's absolute path, or a link as written."""

    key: str
    subdir: str = ""  # a file found in a folder: its subfolder there, which its outputs get under DIR

    @property
    def link(self) -> bool:
        """Whether the intake fetches it (any scheme: the intake says which ones it fetches, as for the CLI)."""
        return "://" in self.key

    def stem_under(self, stem: str) -> str:
        """Where the outputs named `stem` go, relative to DIR."""
        return PurePosixPath(self.subdir, stem).as_posix()


def collect(items: Iterable[str]) -> list[Input]:
    """Every input the arguments name, in their order, each once; UsageError when there is none."""
    items = list(items)
    found: dict[str, Input] = {}
    for item in items:
        for entry in _expand(item):
            found.setdefault(entry.key, entry)
    if not found:
        raise UsageError(f"no audio or video files or links found in {', '.join(items)}")
    return list(found.values())


def _expand(item: str) -> list[Input]:
    if Input(item).link:
        return [Input(item.strip())]
    path = Path(item)
    if path.is_dir():
        return _walk(path)
    if path.is_file() and path.suffix.lower() in LINK_LISTS:
        return [Input(link) for link in _read_links(path)]
    if path.is_file():
        return [Input(os.path.abspath(path))]  # not resolved: a symlink's own name is the stem, as for the CLI
    raise UsageError(f"{item}: no such file or folder")


def _walk(root: Path) -> list[Input]:
    """The audio and video files under `root`, sorted by their path there."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [Path(folder, name).relative_to(root) for name in files
                  if not name.startswith(".") and Path(name).suffix.lower() in MEDIA_SUFFIXES]
    return [Input(os.path.abspath(root / rel), subdir=rel.parent.as_posix()) for rel in sorted(found)]


def _read_links(path: Path) -> list[str]:
    """The links of a list; a line that is no link is a mistake in the list, told before anything runs."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read the list of links: {e}") from None
    links = []
    for number, line in enumerate(lines, start=1):
        if line and not line.startswith("#"):
            if not Input(line).link:
                raise UsageError(f"{path}, line {number}: not a link: {line[:200]}")
            links.append(line)
    return links


def content_hash(item: Input) -> str | None:
    """sha256 of a file's bytes; of the link itself for a link, since what is behind it is only known once
    fetched (so a video replaced behind the same link is not noticed). None for a file that cannot be read:
    its intake then says why."""
    if item.link:
        return hashlib.sha256(item.key.encode()).hexdigest()
    try:
        with open(item.key, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


class Names:
    """Output stems, relative to DIR, handed out so that no two inputs write the same files: the first input to
    ask for a stem gets it; another that asks for it later gets it with a suffix of its own."""

    def __init__(self, taken: dict[str, str]):
        self._owners = {stem.casefold(): owner for stem, owner in taken.items()}  # stem -> the input holding it
        self._given: dict[str, str] = {}  # input -> its stem in this run
        self._lock = threading.Lock()

    def claim(self, stem: str, owner: str) -> str:
        """The stem `owner`'s outputs get: `stem`, unless another input holds it; the same answer every time."""
        with self._lock:
            if owner not in self._given:
                free = self._owners.get(stem.casefold(), owner) == owner
                name = stem if free else f"{stem}-{hashlib.sha256(owner.encode()).hexdigest()[:SUFFIX_DIGITS]}"
                self._owners[name.casefold()] = owner
                self._given[owner] = name
            return self._given[owner]


# --- the manifest -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One line of the manifest: how one input went."""

    input: str  # Input.key
    hash: str | None  # content_hash
    options: dict  # fingerprint(): what shaped the outputs
    status: str  # DONE or FAILED
    outputs: tuple[str, ...] = ()  # the files written, relative to DIR
    stem: str | None = None  # what they are named after, relative to DIR (held against other inputs)
    error: str | None = None  # a failure's message, as the CLI prints it
    note: str | None = None  # why a run of both tasks wrote no translation
    duration_s: float | None = None  # seconds of audio
    seconds: float = 0.0  # wall time of this input, reading, waiting and writing included

    def line(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False) + "\n"

    @classmethod
    def parse(cls, line: str) -> Record | None:
        """The record on `line`, or None for one that is not (cut short by a crash, or edited by hand)."""
        try:
            data = json.loads(line)
            return cls(**{**data, "outputs": tuple(data.get("outputs") or ())})
        except (ValueError, TypeError, AttributeError):
            return None


class Manifest:
    """DIR/manifest.jsonl: read at the start, appended to (from one thread) as inputs finish."""

    def __init__(self, path: Path):
        self.path = path

    def last(self) -> dict[str, Record]:
        """The last record of every input."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        records = (Record.parse(line) for line in text.splitlines() if line.strip())
        return {record.input: record for record in records if record is not None}

    def append(self, record: Record) -> None:
        """One write of one whole line, synced: a crash leaves whole records and at most one cut line, after
        which the next record starts a line of its own."""
        data = record.line().encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def fingerprint(args: argparse.Namespace, options: TranscribeOptions, layout: SubtitleLayout) -> dict:
    """The settings that shape the output files, as plain JSON values (the manifest's `options`): a change to
    any of them redoes the inputs. The device, threads and `--parallel` are left out."""
    decoding = {name: value for name, value in dataclasses.asdict(options).items() if name != "task"}
    settings = {"model": args.model, "int8": args.int8, "task": args.task, "output_format": args.output_format,
                **dataclasses.asdict(layout), **decoding}
    return json.loads(json.dumps(settings, sort_keys=True))


def triage(record: Record | None, digest: str | None, options: dict, out_dir: Path, retry_failed: bool) -> str:
    """What this run does with an input, given its last record: RUN, SKIP or FAILED_BEFORE."""
    if record is None or record.hash != digest or record.options != options:
        return RUN
    if record.status == DONE:
        return SKIP if all((out_dir / path).is_file() for path in record.outputs) else RUN
    return RUN if retry_failed else FAILED_BEFORE


# --- one input ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What every input of a run is given: how to decode, what to write where, and the manifest's `options`."""

    plan: TaskPlan
    options: TranscribeOptions
    layout: SubtitleLayout
    output_format: str
    out_dir: Path
    fingerprint: dict


def process_input(item: Input, digest: str | None, settings: Settings, engine: Engine, names: Names) -> Record:
    """Read one input, transcribe it with `engine` and write its files: the unit of work, whatever runs the
    engine. A failure becomes a failed record, never an exception, so that the other inputs go on."""
    start = time.monotonic()
    base = {"input": item.key, "hash": digest, "options": settings.fingerprint}
    try:
        audio, stem = cli.load_input(item.key)
        stem = names.claim(item.stem_under(stem), item.key)
        results = engine(audio, settings.plan, settings.options)
        target = settings.out_dir / stem
        written = cli.write_outputs(results, settings.plan, target.parent, target.name, settings.output_format,
                                    settings.layout)
    except MediaError as e:
        return Record(**base, status=FAILED, error=str(e), seconds=time.monotonic() - start)
    except Exception as e:  # an engine or disk fault fails this input only
        return Record(**base, status=FAILED, error=f"{type(e).__name__}: {e}", seconds=time.monotonic() - start)
    return Record(
        **base, status=DONE, outputs=tuple(p.relative_to(settings.out_dir).as_posix() for p in written),
        stem=stem, note=cli.translation_note(results, settings.plan), duration_s=len(audio) / SAMPLE_RATE,
        seconds=time.monotonic() - start,
    )


def limited(engine: Engine, slots: int) -> Engine:
    """`engine` with at most `slots` inputs in it at once; the others wait with their media read."""
    gate = threading.BoundedSemaphore(slots)

    def run(audio: np.ndarray, plan: TaskPlan, options: TranscribeOptions) -> dict[str, dict | None]:
        with gate:
            return engine(audio, plan, options)

    return run


# --- the run ------------------------------------------------------------------------------------------------


class ProgressLine:
    """Inputs finished of all, hours of audio and the speed (audio seconds per wall second) on `stream`: redrawn
    in place on a terminal, one line per input elsewhere (a log file)."""

    def __init__(self, total: int, stream: TextIO):
        self.total, self.stream = total, stream
        self.finished = self.failed = 0
        self.audio_s = 0.0
        self.start = time.monotonic()
        self._width = 0

    def update(self, record: Record) -> None:
        self.finished += 1
        self.failed += record.status == FAILED
        self.audio_s += record.duration_s or 0.0
        wall = max(time.monotonic() - self.start, 1e-6)
        failed = f", {self.failed} failed" if self.failed else ""
        text = (f"[{self.finished}/{self.total}] {self.audio_s / 3600:.2f} h of audio, "
                f"{self.audio_s / wall:.2f}x real time{failed}")
        if self.stream.isatty():
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._width:
            self.stream.write("\n")


def run_inputs(todo: list[tuple[Input, str | None]], settings: Settings, engine: Engine, names: Names,
               parallel: int, manifest: Manifest) -> list[Record]:
    """Process the inputs, `parallel` in the engine at a time and as many again reading their media, and
    record each as it finishes."""
    progress = ProgressLine(len(todo), sys.stderr)
    records = []
    pool = ThreadPoolExecutor(max_workers=2 * parallel, thread_name_prefix="batch-input")
    try:
        gated = limited(engine, parallel)
        futures = [pool.submit(process_input, item, digest, settings, gated, names) for item, digest in todo]
        for future in as_completed(futures):
            record = future.result()
            manifest.append(record)
            progress.update(record)
            records.append(record)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # on an interrupt, start nothing more
        progress.close()
    return records


def _options(args: argparse.Namespace) -> tuple[TranscribeOptions, SubtitleLayout]:
    """The CLI's options from the CLI's code, checked in the CLI's order."""
    try:
        layout = cli.layout_from_args(args)
        return cli.options_from_args(args), layout
    except OptionsError as e:
        raise UsageError(str(e)) from None


def _engine(args: argparse.Namespace) -> tuple[Engine, TaskPlan]:
    """The shared service on the model the arguments name, and the plan of their task."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        model = load_model(args.model, args.device, download_root=args.model_dir, int8=args.int8)
    except (CheckpointError, ValueError) as e:
        raise UsageError(str(e)) from None
    plan = model.plan(args.task)
    if not plan.tasks:
        raise UsageError(f"this model cannot translate: {plan.cannot_translate}")
    return TranscriptionService(model).submit, plan


def summarize(records: list[Record], skipped: int, failed_before: list[Record], stream: TextIO) -> None:
    """What the run did, then one line per note and per failure with its reason."""
    done = [r for r in records if r.status == DONE]
    failed = [r for r in records if r.status == FAILED]
    print(f"{len(done)} done, {skipped} skipped (done before), {len(failed) + len(failed_before)} failed",
          file=stream)
    for r in done:
        if r.note:
            print(f"note: {r.input}: {r.note}", file=stream)
    for r in failed:
        print(f"failed: {r.input}: {r.error}", file=stream)
    for r in failed_before:
        print(f"failed before (--retry_failed tries again): {r.input}: {r.error}", file=stream)


def _names(last: dict[str, Record], todo: list[Input]) -> Names:
    """The stems the manifest's done inputs hold, and then those of the files to do in their order, so that
    who gets a contested stem does not depend on which finishes first (a link's title is known only later)."""
    names = Names({r.stem: r.input for r in last.values() if r.status == DONE and r.stem})
    for item in todo:
        if not item.link:
            names.claim(item.stem_under(cli.safe_stem(Path(item.key).stem)), item.key)
    return names


@dataclass(frozen=True)
class Triage:
    """What this run does with the inputs: those to do (with their hash), and how many it leaves."""

    todo: list[tuple[Input, str | None]]
    skipped: int  # done before, files all there
    failed_before: list[Record]  # their last records


def sort_out(inputs: list[Input], last: dict[str, Record], wanted: dict, out_dir: Path, retry_failed: bool) -> Triage:
    """Hash every input (a few files at once: reading them is most of the work) and triage it."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = list(pool.map(content_hash, inputs))
    fates = [triage(last.get(item.key), digest, wanted, out_dir, retry_failed)
             for item, digest in zip(inputs, digests, strict=True)]
    return Triage(
        todo=[(item, digest) for item, digest, fate in zip(inputs, digests, fates, strict=True) if fate == RUN],
        skipped=fates.count(SKIP),
        failed_before=[last[item.key] for item, fate in zip(inputs, fates, strict=True) if fate == FAILED_BEFORE],
    )


def _output_dir(args: argparse.Namespace) -> Path:
    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--output_dir {out_dir}: {e}") from None
    return out_dir


def batch(args: argparse.Namespace) -> int:
    """The command, once its arguments are parsed: the exit status."""
    if args.address is None and (args.workers is not None or args.gpus_per_worker is not None):
        raise UsageError("--workers and --gpus_per_worker need --address")
    options, layout = _options(args)
    inputs = collect(args.inputs)
    out_dir = _output_dir(args)
    manifest = Manifest(out_dir / MANIFEST)
    last = manifest.last()
    wanted = fingerprint(args, options, layout)
    fates = sort_out(inputs, last, wanted, out_dir, args.retry_failed)
    print(f"{len(inputs)} inputs: {len(fates.todo)} to do, {fates.skipped} done before, "
          f"{len(fates.failed_before)} failed before", file=sys.stderr)
    records: list[Record] = []
    if fates.todo and args.address:
        from . import cluster  # Ray, only for a cluster run

        names = _names(last, [item for item, _ in fates.todo])
        job = cluster.job_from_args(args, options, layout, out_dir, wanted)
        records = cluster.run_inputs(fates.todo, job, names, manifest)
    elif fates.todo:
        engine, plan = _engine(args)
        names = _names(last, [item for item, _ in fates.todo])
        settings = Settings(plan, options, layout, args.output_format, out_dir, wanted)
        records = run_inputs(fates.todo, settings, engine, names, args.parallel, manifest)
    summarize(records, fates.skipped, fates.failed_before, sys.stderr)
    return 1 if fates.failed_before or any(r.status == FAILED for r in records) else 0


def main(argv: list[str] | None = None) -> int:
    try:
        return batch(build_parser().parse_args(argv))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the finished inputs are in the manifest; the same command goes on from there",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    # As the package's module, not as this `__main__` copy of it: the cluster module imports that one, and
    # the errors it raises are that module's classes.
    from whisper_core import batch as package_module

    sys.exit(package_module.main())
