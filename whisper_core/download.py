"""Checksum-verified downloads that never leave a file looking whole unless it is."""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .errors import CheckpointError

CHUNK = 1 << 20
TIMEOUT_S = 30


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class _Progress:
    """A one-line progress bar on stderr, redrawn only when the percentage moves."""

    def __init__(self, label: str, total: int | None):
        self.label = label
        self.total = total
        self.done = 0
        self.shown = -1

    def update(self, n: int) -> None:
        self.done += n
        mb = self.done / 1e6
        if self.total:
            percent = 100 * self.done // self.total
            if percent != self.shown:
                self.shown = percent
                sys.stderr.write(f"\r{self.label}: {percent:3d}% ({mb:.1f} of {self.total / 1e6:.1f} MB)")
        elif int(mb) != self.shown:
            self.shown = int(mb)
            sys.stderr.write(f"\r{self.label}: {mb:.1f} MB")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def download(url: str, sha256: str, target: Path) -> Path:
    """`target`, fetched from `url` unless a copy with the right SHA-256 is there already. The bytes go
    to a temporary file in the same folder, renamed to `target` only once complete and verified."""
    if target.exists() and not target.is_file():
        raise CheckpointError(f"{target} exists and is not a file; move it away or choose another download_root")
    if target.is_file():
        if sha256_of(target) == sha256:
            return target
        print(f"{target} does not match its SHA-256 (damaged or partial); downloading it again", file=sys.stderr)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as e:
        raise CheckpointError(f"cannot write to {target.parent} ({e.strerror}); choose another download_root") from e
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, target.name)
        if digest != sha256:
            raise CheckpointError(f"{target.name} downloaded from {url} has SHA-256 {digest}, not {sha256}; "
                                  "it was discarded: run again, and if it recurs the server sends another file "
                                  "(check WHISPER_DOWNLOAD_BASE_URL)")
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


def _fetch(url: str, out, label: str) -> str:
    """Stream `url` into `out`; the SHA-256 of what arrived. Every way the transfer can fail becomes one
    CheckpointError line."""
    h = hashlib.sha256()
    progress = None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            progress = _Progress(f"Downloading {label}", total)
            while chunk := response.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                progress.update(len(chunk))
        if total is not None and progress.done != total:
            raise CheckpointError(f"the download of {label} was cut short ({progress.done} of {total} bytes); "
                                  "run again to retry")
    except urllib.error.HTTPError as e:
        raise CheckpointError(f"cannot download {label}: {url} answered {e.code} {e.reason}") from e
    except http.client.IncompleteRead as e:
        raise CheckpointError(f"the download of {label} was cut short ({len(e.partial) + progress.done} bytes "
                              "arrived); run again to retry") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e.__class__.__name__
        if progress is not None:  # the transfer had started
            raise CheckpointError(f"the download of {label} broke off after {progress.done} bytes ({reason}); "
                                  "run again to retry") from e
        raise CheckpointError(f"cannot download {label} from {url} ({reason}); connect to the network and run "
                              "again, or pass the path of a local checkpoint") from e
    finally:
        if progress is not None:
            progress.close()
    return h.hexdigest()
