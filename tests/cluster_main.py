"""A Ray cluster on this machine for test_cluster, run inside a network namespace that has only loopback: a
head and two worker nodes (`ray.cluster_utils.Cluster`), the batch command run against it as a user runs it,
once per job, and the namespace's interfaces and listening sockets while the cluster is up.

Usage: python cluster_main.py JOBS.json, where JOBS.json holds [{"args": [batch arguments], "remove_worker":
true or false, "client": true or false, "unlink": [files deleted before it starts], optional}, ...]. A job
that removes a worker kills a node that holds a model actor as soon as the first record is in the manifest;
a client job reaches the cluster through Ray Client (ray://), the others at the head's own address. Prints
one JSON line: [{"code", "stderr", "records_at_removal"}, ...] under "jobs", and "interfaces" and "listening"
(the output of `ip -o link` and `ss -ltnp`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ray.cluster_utils import Cluster

if TYPE_CHECKING:
    from ray._private.node import Node

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
OBJECT_STORE_BYTES = 200 * 2**20  # per node; the default is a share of the machine's memory
# Nothing runs on the head, so every model actor is on a worker; the worker left after the other is removed
# has room for both actors and a reading task, so the lost actor is restarted there.
HEAD_CPUS, WORKER_CPUS, WORKERS = 0, 3, 2
CLIENT_PORT = 10001  # Ray Client's server on the head; the namespace has every port to itself
JOB_TIMEOUT_S = 240
POLL_S = 0.2


def start() -> Cluster:
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": HEAD_CPUS, "include_dashboard": False, "node_ip_address": LOOPBACK,
        "object_store_memory": OBJECT_STORE_BYTES, "ray_client_server_port": CLIENT_PORT})
    for _ in range(WORKERS):
        cluster.add_node(num_cpus=WORKER_CPUS, node_ip_address=LOOPBACK, object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    return cluster


def children(pid: int) -> list[str]:
    """The command lines of a process's children (Ray names its workers' processes after their actor)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError, IndexError):
            continue
    return found


def actor_node(cluster: Cluster) -> Node | None:
    """A worker node that holds a model actor now."""
    for node in cluster.worker_nodes:
        raylet = node.all_processes["raylet"][0].process.pid
        if any("MapWorker" in command for command in children(raylet)):
            return node
    return None


def records(manifest: Path) -> int:
    try:
        return len(manifest.read_text().splitlines())
    except FileNotFoundError:
        return 0


def remove_when_recorded(cluster: Cluster, manifest: Path, process: subprocess.Popen) -> int | None:
    """Kill a node holding a model actor once the first record is in: the number of records then."""
    while process.poll() is None:
        if records(manifest) >= 1 and (victim := actor_node(cluster)) is not None:
            cluster.remove_node(victim, allow_graceful=False)
            return records(manifest)
        time.sleep(POLL_S)
    return None


def run_job(cluster: Cluster, job: dict) -> dict:
    for path in job.get("unlink", []):
        Path(path).unlink(missing_ok=True)  # a job before that failed: its report says why
    address = f"ray://{LOOPBACK}:{CLIENT_PORT}" if job["client"] else cluster.address
    args = [*job["args"], "--address", address]
    manifest = Path(args[args.index("--output_dir") + 1]) / "manifest.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "whisper_core.batch", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    removed = remove_when_recorded(cluster, manifest, process) if job["remove_worker"] else None
    _, stderr = process.communicate(timeout=JOB_TIMEOUT_S)
    return {"code": process.returncode, "stderr": stderr, "records_at_removal": removed}


def command(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


if __name__ == "__main__":
    jobs = json.loads(Path(sys.argv[1]).read_text())
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = start()
    try:
        report = {"jobs": [run_job(cluster, job) for job in jobs],
                  "interfaces": command("ip", "-o", "link"), "listening": command("ss", "-ltnp")}
    finally:
        cluster.shutdown()
    print(json.dumps(report))
