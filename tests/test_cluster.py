"""The batch command's cluster mode, on a Ray cluster of a head and two worker nodes on this machine
(tests/cluster_main.py). Ray listens on every interface and finds its address by reaching out, so the
cluster runs in a network namespace of its own that has only loopback: nothing it sends can leave the
machine. Its files against the local mode's, a bad file, a rerun, and a worker node killed mid-job.

Needs root (for `ip netns`), iproute2 and requirements-cluster.txt; skipped without them, a failure where
REQUIRE_CLUSTER=1."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from whisper_core import batch
from whisper_core.errors import CheckpointError
from whisper_core.media import MSG_NOT_MEDIA
from whisper_core.speech_model import load_model

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--beam_size", "1", "--temperature_increment_on_fallback", "None", "--threads", "1"]
SOURCES = ["es_arenas_blanquecinas.wav", "en_librispeech_1272-128104-0000.wav", "fr_sous_le_consulat.wav",
           "de_portal_leichenhalle.wav"]
COPIES = 2  # of each source, under other names, in the job that loses a node: work remains when it goes
REDONE = "fr_sous_le_consulat.srt"  # deleted before the rerun, which redoes only its input
CLUSTER_TIMEOUT_S = 420


def cluster_unavailable() -> str | None:
    """Why this machine cannot run the test cluster, or None."""
    if os.geteuid() != 0:
        return "not root: `ip netns` needs root"
    if shutil.which("ip") is None or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode:
        return "`ip netns` (iproute2) is not available"
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install -r requirements-cluster.txt)"
    return None


@pytest.fixture(scope="module")
def cluster_ready() -> None:
    reason = cluster_unavailable()
    if reason and os.environ.get("REQUIRE_CLUSTER") == "1":
        pytest.fail(f"REQUIRE_CLUSTER=1 but {reason}")
    if reason:
        pytest.skip(reason)


@contextlib.contextmanager
def loopback_namespace() -> Iterator[str]:
    """A network namespace with only `lo`, up; deleted afterwards, with whatever still runs in it."""
    name = f"wc-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in map(int, pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", name], check=True)


@dataclass(frozen=True)
class Local:
    """The local mode's run over the sources and a bad file."""

    folder: Path
    bad: Path
    out: Path
    code: int
    stderr: str


@dataclass(frozen=True)
class Job:
    out: Path
    inputs: list[Path]
    code: int
    stderr: str
    records_at_removal: int | None


@dataclass(frozen=True)
class ClusterRun:
    # first: the sources and the bad file; rerun: the same after one output was deleted; bad_model: a missing
    # model (these three through Ray Client, ray://); lossy: copies of the sources, with a worker node removed
    # after the first record (at the head's address, as a driver on the head node reaches it)
    jobs: dict[str, Job]
    interfaces: str
    listening: str
    missing_model: Path


@pytest.fixture(scope="module")
def local(cluster_ready, shared, tmp_path_factory) -> Local:
    root = tmp_path_factory.mktemp("cluster-local")
    folder = root / "in"
    folder.mkdir()
    for name in SOURCES:
        shutil.copy(shared / "audio" / name, folder / name)
    bad = folder / "notes.mp3"
    bad.write_text("this is not audio")
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setitem(sys.modules, "ray", None)  # `import ray` fails: the local mode must not need it
        code = batch.main([str(folder), "--output_dir", str(root / "out"), *FAST])
    return Local(folder, bad, root / "out", code, stderr.getvalue())


@pytest.fixture(scope="module")
def cluster_run(local, tmp_path_factory) -> ClusterRun:
    root = tmp_path_factory.mktemp("cluster")
    copies = root / "copies"
    copies.mkdir()
    for n in range(COPIES):
        for name in SOURCES:
            shutil.copy(local.folder / name, copies / f"{Path(name).stem}-copy{n}.wav")
    first = [str(local.folder), "--output_dir", str(root / "first"), *FAST, "--workers", "2"]
    lossy = [str(copies), "--output_dir", str(root / "lossy"), *FAST, "--workers", "2"]
    missing = root / "missing.pt"
    bad_model = [str(local.folder / SOURCES[0]), "--output_dir", str(root / "bad_model"), "--model", str(missing),
                 "--workers", "1"]
    jobs = {"first": {"args": first, "remove_worker": False, "client": True},
            "rerun": {"args": first, "remove_worker": False, "client": True,
                      "unlink": [str(root / "first" / REDONE)]},
            "lossy": {"args": lossy, "remove_worker": True, "client": False},
            "bad_model": {"args": bad_model, "remove_worker": False, "client": True}}
    inputs = {"first": sorted(local.folder.iterdir()), "rerun": sorted(local.folder.iterdir()),
              "lossy": sorted(copies.iterdir()), "bad_model": [local.folder / SOURCES[0]]}
    (root / "jobs.json").write_text(json.dumps(list(jobs.values())))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    with loopback_namespace() as name:
        done = subprocess.run(["ip", "netns", "exec", name, sys.executable, str(ROOT / "tests" / "cluster_main.py"),
                               str(root / "jobs.json")], capture_output=True, text=True, env=env,
                              timeout=CLUSTER_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-5000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    ran = {name: Job(Path(spec["args"][2]), inputs[name], result["code"], result["stderr"],
                     result["records_at_removal"])
           for (name, spec), result in zip(jobs.items(), report["jobs"], strict=True)}
    return ClusterRun(ran, report["interfaces"], report["listening"], missing)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / batch.MANIFEST).read_text().splitlines()]


def files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def source_stem(stem: str) -> str:
    """The source a copy was made from: `x-copy1` -> `x`."""
    return stem.rsplit("-copy", 1)[0]


def assert_outputs_are_local(job: Job, local: Local, done: list[dict]) -> None:
    """Each done input's files: the local mode's names and bytes (text formats and JSON alike, one input at a
    time in each model), and nothing else in the output folder."""
    for record in done:
        stem = Path(record["input"]).stem
        assert record["stem"] == stem
        expected = {f"{source_stem(stem)}.{fmt}" for fmt in ("txt", "vtt", "srt", "tsv", "json")}
        assert {Path(p).name.replace(stem, source_stem(stem)) for p in record["outputs"]} == expected
        for path in record["outputs"]:
            theirs = local.out / Path(path).name.replace(stem, source_stem(stem))
            assert (job.out / path).read_bytes() == theirs.read_bytes(), path
    assert files(job.out) == {batch.MANIFEST, *(p for r in done for p in r["outputs"])}  # no partial file left


def test_the_local_mode_runs_without_ray(local):
    assert local.code == 1 and "4 done, 0 skipped (done before), 1 failed" in local.stderr, local.stderr


def test_outputs_are_the_local_modes_and_a_bad_file_is_recorded(cluster_run, local):
    job = cluster_run.jobs["first"]
    assert job.code == 1, job.stderr[-3000:]
    assert "4 done, 0 skipped (done before), 1 failed" in job.stderr
    assert f"failed: {local.bad}: {MSG_NOT_MEDIA}" in job.stderr and "[5/5]" in job.stderr
    first_run = records(job.out)[:5]
    assert sorted(r["input"] for r in first_run) == [str(p) for p in job.inputs]
    [failed] = [r for r in first_run if r["status"] == "failed"]
    assert (failed["input"], failed["error"], failed["outputs"]) == (str(local.bad), MSG_NOT_MEDIA, [])
    local_records = {r["input"]: r for r in records(local.out)}
    for record in first_run:
        mine, theirs = dict(record), dict(local_records[record["input"]])
        assert mine.pop("seconds") > 0 and theirs.pop("seconds") > 0
        assert mine == theirs  # hash, options, outputs, stem, error, note and audio length
    assert_outputs_are_local(job, local, [r for r in first_run if r["status"] == "done"])


def test_a_rerun_redoes_only_what_is_missing(cluster_run, local):
    job = cluster_run.jobs["rerun"]
    assert job.code == 1 and "1 done, 3 skipped (done before), 1 failed" in job.stderr, job.stderr[-3000:]
    assert f"failed before (--retry_failed tries again): {local.bad}" in job.stderr
    [redone] = records(job.out)[5:]
    assert redone["input"] == str(local.folder / REDONE).replace(".srt", ".wav") and redone["status"] == "done"
    assert (job.out / REDONE).read_bytes() == (local.out / REDONE).read_bytes()


def test_a_worker_node_lost_mid_job_costs_no_input_and_no_second_write(cluster_run, local):
    job = cluster_run.jobs["lossy"]
    assert job.code == 0, job.stderr[-3000:]
    assert job.records_at_removal is not None and job.records_at_removal < len(job.inputs) - 2
    assert f"{len(job.inputs)} done, 0 skipped (done before), 0 failed" in job.stderr
    lines = records(job.out)
    assert sorted(r["input"] for r in lines) == [str(p) for p in job.inputs]  # one record each
    assert all(r["status"] == "done" for r in lines)
    assert_outputs_are_local(job, local, lines)


def test_a_model_the_actors_cannot_load_is_a_bad_argument(cluster_run):
    job = cluster_run.jobs["bad_model"]
    with pytest.raises(CheckpointError) as expected:
        load_model(str(cluster_run.missing_model))
    assert job.code == 2 and job.stderr.strip().splitlines()[-1] == f"error: {expected.value}", job.stderr[-3000:]
    assert not (job.out / batch.MANIFEST).exists()


SERVER_DIED = "Initialization failure from server:\nTraceback ...\nRuntimeError: Starting Ray client server " \
              "failed. See ray_client_server_23000.err for detailed logs."
# the proxy read the dying server's command line (as it failed a CI run of the cluster test)
SERVER_ZOMBIE = "Initialization failure from server:\nTraceback ...\n    raise ZombieProcess(self.pid, self._name, " \
                "self._ppid)\npsutil.ZombieProcess: PID still exists but it's a zombie (pid=19377)\n"


class FlakyInit:
    """`ray.init` that fails as Ray Client does when the head's server for it dies starting, `failures`
    times, then succeeds."""

    def __init__(self, failures: int, message: str = SERVER_DIED):
        self.failures, self.message, self.calls = failures, message, 0

    def __call__(self, **kwargs) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionAbortedError(self.message)


@pytest.mark.parametrize("message", [SERVER_DIED, SERVER_ZOMBIE])
@pytest.mark.parametrize("failures", [0, 1, 2])
def test_a_client_server_that_dies_starting_is_connected_again(cluster_ready, monkeypatch, capsys, failures,
                                                                 message):
    from whisper_core import cluster

    init = FlakyInit(failures, message)
    monkeypatch.setattr(cluster.ray, "init", init)
    monkeypatch.setattr(cluster, "CONNECT_PAUSE_S", 0.0)
    cluster._connect("ray://127.0.0.1:10001")
    assert init.calls == failures + 1
    assert capsys.readouterr().err.count("connecting again") == failures


def test_connecting_gives_up_after_its_attempts_and_at_once_on_other_failures(cluster_ready, monkeypatch):
    from whisper_core import cluster

    monkeypatch.setattr(cluster, "CONNECT_PAUSE_S", 0.0)
    always = FlakyInit(cluster.CONNECT_ATTEMPTS)
    monkeypatch.setattr(cluster.ray, "init", always)
    with pytest.raises(batch.ClusterError, match="Starting Ray client server failed"):
        cluster._connect("ray://127.0.0.1:10001")
    assert always.calls == cluster.CONNECT_ATTEMPTS
    refused = FlakyInit(1, "Initialization failure from server:\nbad runtime_env")
    monkeypatch.setattr(cluster.ray, "init", refused)
    with pytest.raises(batch.ClusterError, match="bad runtime_env"):
        cluster._connect("ray://127.0.0.1:10001")
    assert refused.calls == 1


def test_cluster_options_need_an_address(tmp_path):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = batch.main([str(tmp_path), "--output_dir", str(tmp_path / "out"), "--workers", "2"])
    assert code == 2 and stderr.getvalue().strip() == "error: --workers and --gpus_per_worker need --address"


def listening_hosts(ss_output: str) -> list[tuple[str, str]]:
    """(local address, process) of each listening socket in `ss -ltnp` output."""
    rows = [line.split() for line in ss_output.splitlines()[1:] if line.strip()]
    return [(row[3].rsplit(":", 1)[0].strip("[]").split("%")[0], row[-1]) for row in rows]


def is_loopback_or_any(host: str) -> bool:
    if host in ("*", "0.0.0.0", "::"):
        return True  # every address of a namespace that has only loopback
    address = ipaddress.ip_address(host)
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def test_the_cluster_ran_on_loopback_only(cluster_run):
    """The guarantee is the namespace: with no interface but `lo` nothing in it can reach another host,
    whatever address a socket is bound to. Ray's own sockets (its control store and raylets) being seen
    there shows that the cluster ran in it; and each is bound to loopback (or to every address, which
    there is loopback too)."""
    interfaces = [line.split(":")[1].strip() for line in cluster_run.interfaces.splitlines() if line.strip()]
    assert interfaces == ["lo"]
    hosts = listening_hosts(cluster_run.listening)
    processes = " ".join(process for _, process in hosts)
    assert "gcs_server" in processes and "raylet" in processes, cluster_run.listening
    assert all(is_loopback_or_any(host) for host, _ in hosts), cluster_run.listening
