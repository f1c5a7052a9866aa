"""Runs app.py as its own process, as a deployment would, for the browser and client tests: a free port on
127.0.0.1, a GRADIO_TEMP_DIR of its own, links to private addresses allowed (the test media are served from
127.0.0.1) and analytics off. One server per test module: starting it loads the model (5-10 s)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180.0  # a cold start converts the checkpoint once (the cache may be empty in CI)
TEST_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "GRADIO_SERVER_NAME": "127.0.0.1",
    "WHISPER_ALLOW_PRIVATE_URLS": "1",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`python app.py` in a subprocess; `url` once it answers, its output in `log_path`."""

    def __init__(self, workdir: Path, **env: str):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = workdir / "app.log"
        self.env = {**os.environ, **TEST_ENV, "GRADIO_SERVER_PORT": str(self.port),
                    "GRADIO_TEMP_DIR": str(workdir / "gradio"), **env}
        self.process: subprocess.Popen | None = None

    def start(self) -> AppServer:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"app.py exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.stop()
        pytest.fail(f"app.py did not answer within {START_TIMEOUT_S:.0f} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def make_media(tmp: Path, command: list[str]) -> Path:
    """Run the project's ffmpeg (the last argument is the output file) and return the file it wrote."""
    from whisper_core.audio import ffmpeg_executable

    subprocess.run([ffmpeg_executable(), "-nostdin", "-v", "error", "-y", *command], check=True, cwd=tmp)
    return tmp / command[-1]
