"""The C heap under a long-running server. glibc gives each thread that allocates its own arena and keeps
freed memory there, so a process that served many users at once stays as large as its busiest moment.
With one arena for every thread, and the free memory handed back to the system whenever the server falls
idle, it returns to its idle size once the load ends. Elsewhere than glibc these are no-ops."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt's parameter numbers in glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# glibc hands back the free top of its first arena only: with a second, whatever lay at that arena's top
# when the load ended (up to its 64 MB) stayed in memory, in some runs and not others.
ARENAS = 1
# The largest block glibc will serve from its heap rather than a fresh mapping (its ceiling on 64-bit).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
# Free memory at the heap's top that glibc keeps for the next allocation instead of returning it.
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def limit_arenas(arenas: int = ARENAS) -> None:
    """Let threads share this many arenas. Arenas made before this call stay, and glibc cannot hand back the
    free memory at the top of an arena other than the first: call it before any other thread allocates."""
    if (libc := _glibc()) is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


def reuse_freed_memory() -> None:
    """Serve the network's activations (up to 32 MB each) from freed heap memory. By default glibc maps
    every block over 128 KB afresh, or trims the heap's top as soon as a few such blocks are free; then
    each page the next window touches is a page fault, and a 30-s window's encoder pass on a CPU goes
    through blocks of 3-12 MB. The server still hands the free memory back when it falls idle
    (`give_back`)."""
    if (libc := _glibc()) is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def give_back() -> None:
    """Hand the heap's free memory back to the system."""
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)
