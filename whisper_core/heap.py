"""The C heap under a long-running server. glibc gives each thread that allocates its own arena and keeps
freed memory there, so a process that served many users at once stays as large as its busiest moment.
With two arenas, and the free memory handed back to the system whenever the server falls idle, it
returns to its idle size once the load ends. Elsewhere than glibc these are no-ops."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h
ARENAS = 2


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def limit_arenas(arenas: int = ARENAS) -> None:
    """Let threads share this many arenas (call before the threads start)."""
    if (libc := _glibc()) is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


def give_back() -> None:
    """Hand the heap's free memory back to the system."""
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)
