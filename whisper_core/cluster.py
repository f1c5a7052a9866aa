"""`python -m whisper_core.batch INPUT... --output_dir DIR --address ray://HOST:PORT | auto`: the same batch,
with the same manifest, files and triage, run on a Ray cluster by Ray Data's batch-inference pattern.

The inputs to do become a dataset of one row each. A CPU task per input fetches and decodes its media with
the intake of the local mode (`cli.load_input`: the same link guard, length and size limits), anywhere in
the cluster. A fixed pool of model actors (`Transcriber`: one model each, one per `--gpus_per_worker` GPUs
where the cluster has GPUs, else `--workers` of them on CPUs) decodes the audio through its own
`TranscriptionService`, `--parallel` inputs at a time sharing its batches, and renders the files with the
writers of the local mode into a private temporary folder, whose bytes it hands back. The dataset runs in an
actor on the head node (`Feed`), since Ray Data cannot run in a Ray Client's process (ray://); this process,
the driver, takes the results from it as they come, writes each input's files under DIR (so DIR need not be
shared with the nodes: over ray:// it is on this machine) and then appends its record, as the local mode does.

Each node must have this project installed as the driver has it, and must reach the files given by path
under the same paths as the driver (a shared file system; links need nothing). The intake's settings
(`WHISPER_MAX_DURATION`, `WHISPER_ALLOW_PRIVATE_URLS`, ...) are those of the nodes' own environment, the one
`ray start` was run in.

A lost node costs only time: Ray Data's actor pool restarts its actors elsewhere and runs their batches
again (its defaults, `max_restarts=-1` and `max_task_retries=-1`), and reruns the reading tasks whose results
were lost. The files of an input are written once, by the driver, under a temporary name that is renamed into
place; a result that arrives again is ignored, so that each input has one record.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from . import batch, cli
from .audio import SAMPLE_RATE
from .errors import CheckpointError
from .media import MediaError
from .options import TranscribeOptions
from .service import TranscriptionService
from .speech_model import load_model
from .writers import SubtitleLayout

# A reading task mostly waits, on its download or on the ffmpeg process, so a few share a CPU. Being below the
# model actors' CPUs, it also keeps Ray Data from fusing the reading into the actors (it fuses steps whose
# resources agree), which would leave a model idle while its next input is fetched.
READ_CPUS = 0.25
RENDER_STEM = "out"  # the actors render `out.srt` ...; the driver names the files after the input's stem
HEAD = "node:__internal_head__"  # a resource only the head node has
# Ray Client's words for a server on the head that died as it started: its own message, or psutil's when the
# proxy looks at the process's command line in the moment between its death and its reaping
CLIENT_SERVER_FAILED = ("Starting Ray client server failed", "psutil.ZombieProcess", "psutil.NoSuchProcess")
CONNECT_ATTEMPTS = 3
CONNECT_PAUSE_S = 2.0


@dataclass(frozen=True)
class ModelSpec:
    """What each model actor is built from: the model, how it decodes and what it writes."""

    model: str
    model_dir: str | None
    device: str | None
    int8: bool
    threads: int
    task: str
    options: TranscribeOptions
    layout: SubtitleLayout
    output_format: str
    parallel: int


@dataclass(frozen=True)
class Job:
    """A batch run on a cluster: where it is, the actors it asks for, and where the results go."""

    address: str
    workers: int | None  # None: one per gpus_per_worker GPUs, or 1 on a cluster without GPUs
    gpus_per_worker: float
    spec: ModelSpec
    out_dir: Path
    fingerprint: dict


def job_from_args(args: Any, options: TranscribeOptions, layout: SubtitleLayout, out_dir: Path,
                  fingerprint: dict) -> Job:
    """The job the batch command's arguments ask for."""
    spec = ModelSpec(args.model, args.model_dir, args.device, args.int8, args.threads, args.task, options, layout,
                     args.output_format, args.parallel)
    gpus = 1.0 if args.gpus_per_worker is None else args.gpus_per_worker
    return Job(args.address, args.workers, gpus, spec, out_dir, fingerprint)


# --- on the nodes -------------------------------------------------------------------------------------------


def _fault(e: Exception) -> str:
    """An input's failure as the local mode records it: the intake's message, or the fault's type and text."""
    return str(e) if isinstance(e, MediaError) else f"{type(e).__name__}: {e}"


def read_media(row: dict[str, Any]) -> dict[str, Any]:
    """A CPU task: one input's audio and stem. A failure rides along as the row's error instead of being
    raised, so that it is recorded like any other result and the job goes on."""
    start = time.monotonic()
    try:
        audio, stem = cli.load_input(row["key"])
        error = ""
    except Exception as e:
        audio, stem, error = np.zeros(0, np.float32), "", _fault(e)
    return {"key": row["key"], "stem": stem, "audio": audio, "error": error, "seconds": time.monotonic() - start}


class Transcriber:
    """A model actor of Ray Data's pool: loads its model once, then decodes each batch of rows, `parallel`
    of them at once in its own service (their windows share its batches; one at a time, the default, gives
    the CLI's bytes), and renders each input's files."""

    def __init__(self, spec: ModelSpec):
        if spec.threads > 0:
            torch.set_num_threads(spec.threads)
        model = load_model(spec.model, spec.device, download_root=spec.model_dir, int8=spec.int8)
        self.plan = model.plan(spec.task)
        if not self.plan.tasks:
            raise ValueError(f"this model cannot translate: {self.plan.cannot_translate}")
        self.spec = spec
        self.engine = TranscriptionService(model).submit
        self.pool = ThreadPoolExecutor(max_workers=spec.parallel, thread_name_prefix="cluster-input")

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, list]:
        count = len(rows["key"])
        done = list(self.pool.map(self._one, ({name: rows[name][i] for name in rows} for i in range(count))))
        return {name: [d[name] for d in done] for name in done[0]}

    def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        """Decode and render one row; a fault fails that input only."""
        start = time.monotonic()
        result = {"key": row["key"], "stem": row["stem"], "error": row["error"], "note": "", "duration_s": 0.0,
                  "suffixes": [], "contents": []}
        if not row["error"]:
            try:
                results = self.engine(np.array(row["audio"], np.float32), self.plan, self.spec.options)
                suffixes, contents = self._render(results)
                result.update(note=cli.translation_note(results, self.plan) or "", suffixes=suffixes,
                              contents=contents, duration_s=len(row["audio"]) / SAMPLE_RATE)
            except Exception as e:
                result["error"] = _fault(e)
        return {**result, "seconds": row["seconds"] + time.monotonic() - start}

    def _render(self, results: dict[str, dict | None]) -> tuple[list[str], list[bytes]]:
        """The input's files by the local mode's writers, as (what follows the stem in each name, its bytes)."""
        spec = self.spec
        with tempfile.TemporaryDirectory(prefix="whisper-render-") as folder:
            written = cli.write_outputs(results, self.plan, Path(folder), RENDER_STEM, spec.output_format,
                                        spec.layout)
            return [p.name[len(RENDER_STEM):] for p in written], [p.read_bytes() for p in written]


# --- the driver ---------------------------------------------------------------------------------------------


def _pool_size(job: Job) -> tuple[int, float]:
    """The number of model actors and the GPUs each holds (none on a cluster without GPUs)."""
    gpus = ray.cluster_resources().get("GPU", 0.0)
    per_actor = job.gpus_per_worker if gpus else 0.0
    workers = job.workers or (max(int(gpus // per_actor), 1) if per_actor else 1)
    return workers, per_actor


def pipeline(keys: list[str], job: Job) -> ray.data.Dataset:
    """Inputs, read by CPU tasks (one input a task), decoded by the pool of model actors."""
    workers, gpus = _pool_size(job)
    return (
        ray.data.from_items([{"key": key} for key in keys], override_num_blocks=len(keys))
        .map(read_media, num_cpus=READ_CPUS)
        .map_batches(Transcriber, fn_constructor_args=(job.spec,), batch_size=job.spec.parallel,
                     batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                     num_cpus=max(job.spec.threads, 1), num_gpus=gpus)
    )


@ray.remote(num_cpus=0, resources={HEAD: 0.001})
class Feed:
    """Runs the dataset, on the head node (which a job cannot outlive anyway), and hands its results over one
    at a time: Ray Data cannot run in a Ray Client's process, while an actor can be called from one."""

    def __init__(self, keys: list[str], job: Job):
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the batch command's own progress line instead
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notes on starting and ending the dataset
        self.rows = iter(pipeline(keys, job).iter_rows())

    def next(self) -> dict[str, Any] | None:
        """The next input's result as it comes (None at the end); a fault of the cluster is raised."""
        return next(self.rows, None)


def _connect(address: str) -> None:
    """Join the cluster. Over ray://, the head starts a server process for each client; when that process
    dies as it starts (Ray's client proxy forks it from a process busy with gRPC threads, and now and then
    the child is gone before it runs), the connection is tried again, up to CONNECT_ATTEMPTS times."""
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            ray.init(address=address, logging_level=logging.WARNING)
            return
        except ConnectionAbortedError as e:
            if not any(words in str(e) for words in CLIENT_SERVER_FAILED) or attempt == CONNECT_ATTEMPTS:
                raise batch.ClusterError(f"--address {address}: {e}") from None
            ray.shutdown()
            print(f"Ray Client's server on the head did not start; connecting again ({attempt + 1} of "
                  f"{CONNECT_ATTEMPTS})", file=sys.stderr)
            time.sleep(CONNECT_PAUSE_S)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise batch.ClusterError(f"--address {address}: {e}") from None


def results(feed: ray.actor.ActorHandle) -> Iterator[dict[str, Any]]:
    """The feed's results, in the order they come."""
    while (row := ray.get(feed.next.remote())) is not None:
        yield row


def place(out_dir: Path, stem: str, suffixes: list[str], contents: list[bytes]) -> list[Path]:
    """Write an input's files under DIR: each under a hidden temporary name, synced, then renamed into
    place, so that no cut file ever stands under an output's name."""
    paths = []
    for suffix, data in zip(suffixes, contents, strict=True):
        path = out_dir / f"{stem}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        paths.append(path)
    return paths


def _record(row: dict[str, Any], item: batch.Input, digest: str | None, job: Job, names: batch.Names) -> batch.Record:
    """Write one result's files and make its record, as `batch.process_input` does."""
    start = time.monotonic()
    base = {"input": item.key, "hash": digest, "options": job.fingerprint}
    stem = names.claim(item.stem_under(row["stem"]), item.key) if row["stem"] else None  # once read, as there
    if row["error"]:
        return batch.Record(**base, status=batch.FAILED, error=row["error"], seconds=row["seconds"])
    try:
        written = place(job.out_dir, stem, list(row["suffixes"]), list(row["contents"]))
    except OSError as e:
        return batch.Record(**base, status=batch.FAILED, error=_fault(e), seconds=row["seconds"])
    return batch.Record(
        **base, status=batch.DONE, outputs=tuple(p.relative_to(job.out_dir).as_posix() for p in written),
        stem=stem, note=row["note"] or None, duration_s=row["duration_s"],
        seconds=row["seconds"] + time.monotonic() - start,
    )


def _follow(rows: Iterator[dict[str, Any]], todo: list[tuple[batch.Input, str | None]], job: Job, names: batch.Names,
            manifest: batch.Manifest) -> list[batch.Record]:
    """Record each input as its result streams back."""
    pending = {item.key: (item, digest) for item, digest in todo}
    progress = batch.ProgressLine(len(todo), sys.stderr)
    records = []
    try:
        for row in rows:
            if row["key"] not in pending:  # recorded already: a batch that ran again after a lost node
                continue
            record = _record(row, *pending.pop(row["key"]), job, names)
            manifest.append(record)
            progress.update(record)
            records.append(record)
    finally:
        progress.close()
    return records


def _cause(error: BaseException) -> BaseException:
    """The first exception inside Ray's wrappers: what the feed, or a model actor's constructor, raised."""
    while True:
        if isinstance(error, ray.exceptions.RayTaskError) and error.cause is not None:
            error = error.cause
        elif isinstance(error, ray.exceptions.RayActorError) and error.args and isinstance(
                error.args[0], ray.exceptions.RayTaskError):
            error = error.args[0]  # an actor that died in its constructor: the constructor's error
        else:
            return error


def _stopped(error: ray.exceptions.RayError) -> Exception:
    """The batch command's error for a job the cluster gave up: a model that cannot be loaded is a bad
    argument, as in the local mode; anything else, its first line."""
    cause = _cause(error)
    if isinstance(cause, (CheckpointError, ValueError)):
        return batch.UsageError(str(cause))
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return batch.ClusterError(f"the cluster stopped the job: {type(cause).__name__}: {first_line} (see the Ray logs)")


def run_inputs(todo: list[tuple[batch.Input, str | None]], job: Job, names: batch.Names,
               manifest: batch.Manifest) -> list[batch.Record]:
    """The inputs to do, on the cluster at `job.address`, recorded as they finish."""
    _connect(job.address)
    try:
        feed = Feed.remote([item.key for item, _ in todo], job)
        return _follow(results(feed), todo, job, names, manifest)
    except ray.exceptions.RayError as e:
        raise _stopped(e) from None
    finally:
        ray.shutdown()
