"""The batch job's allocators, set so that its processes' memory stays flat.

Two allocators hold memory that their process has freed: glibc's malloc (everything in C and
C++: Python's large objects, Ray's core worker, NumPy) and mimalloc, pyarrow's default pool
(Arrow buffers: the job's blocks of decoded audio). Both are set through the environment, so
that a setting made in the driver before Ray starts reaches the processes Ray starts: a
local Ray's GCS, raylet and workers. A cluster's processes get them from their pods'
environment (the Helm chart's ``common.mallocArenaMax`` and ``common.mimallocPurgeDelayMs``).

**glibc's arenas** (:func:`limit_malloc_arenas`). glibc gives threads their own malloc
arenas, up to eight per core. The driver of a Ray Data job runs dozens of threads (Ray's core
worker, gRPC, the streaming executor, its stats thread); memory one of them frees stays in
its arena, in pieces the others do not reuse, and the driver's anonymous memory grew with
the length of the run although its live heap did not (``benchmarks/RESULTS.md``, "Batch job
memory at corpus scale": 142 -> 153 MiB from 10k to 100k rows; with two arenas 140 -> 144
MiB; jemalloc kept as much as glibc's default). The function sets glibc's ``M_ARENA_MAX`` at
run time, which is the same as starting the process with ``MALLOC_ARENA_MAX`` in its
environment, for every launch of the job (``python -m``, ``ray job submit``, a KubeRay
RayJob). It must run before the process has made more than a few arenas, that is before Ray
starts its threads: glibc fixes the limit the first time it needs it. Ray's own processes
have the same threads and grew the same way: Ray Data's stats actor (``ray::_StatsActor``)
went from 104 to 133 MiB of anonymous memory over a 100k-row run, and stayed at 108-109 MiB
with ``MALLOC_ARENA_MAX=2``; the job's rows per second did not change.

**The driver's free heap pages** (:func:`return_free_heap_pages`). Within its two arenas the
driver's heap still fragments: a 1M-row run's trace (every 30 s: glibc's own account,
``mallinfo2``) showed its live heap creep 47.5 -> 50.4 MiB while the free memory inside the
heap rose 3.6 -> 10.4 MiB in steps, each a transient peak whose pages stayed in the heap
because live blocks sat above them (glibc returns only the heap's top on ``free``): the
driver's anonymous memory went 139 -> 148 MiB, Python's objects flat. ``malloc_trim`` returns
every whole free page inside the heap too; the driver calls it as it logs its progress. In
a second 1M-row run with the call, the driver held 143-145 MiB from minute 12 to 30 (147.6-
148.9 without) and 146.4 MiB at the end; its peak, a transient, was the same (148.8 MiB).
What the call cannot return is the live heap's own creep, 47.8 -> 51.7 MiB over the 1M
rows: native memory (Python's objects are flat), cause not found.

**Arrow's pool** (:func:`purge_arrow_memory_promptly`). mimalloc keeps the pages of the
Arrow buffers a process frees, to hand them out again, and returns them to the system only
later. In the fetch-and-decode worker, the job's largest, its arena held 52-60 MiB while
Arrow had 12-19 MiB allocated (23 MiB at most), and that worker's anonymous memory swung
between 251 and 271 MiB through a 300k-row run with no trend (its Python objects and glibc's
heap stayed flat): the longer a run, the higher the swing its peak catches (261 MiB at 10k
rows, 276-289 at 500k-1M). With ``MIMALLOC_PURGE_DELAY=0`` mimalloc returns freed pages at
once: that worker's peak was 238 MiB at 10k rows and 249 at 500k, at the same rows per
second (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

MALLOC_ARENAS = 2
"""Arenas the threads of each of the job's processes share (glibc's ``MALLOC_ARENA_MAX``,
unless the environment sets it)."""

_M_ARENA_MAX = -8
"""``mallopt``'s parameter number for the arena limit (glibc's ``malloc.h``)."""


@functools.cache
def _glibc(function: str, argtypes: tuple, restype: Any) -> Any:
    """The C library's ``function`` with its types set, or ``None`` where it has none (not
    glibc). Looked up once per process: ``find_library`` runs ``ldconfig`` (~4 ms)."""
    name = ctypes.util.find_library("c")
    found = getattr(ctypes.CDLL(name), function, None) if name else None
    if found is not None:
        found.argtypes, found.restype = argtypes, restype
    return found


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let this process's threads, and those of the processes it starts from now on, share at
    most ``arenas`` glibc malloc arenas each. Returns whether this process's limit was set:
    ``False`` where the C library is not glibc (no ``mallopt``) and where
    ``MALLOC_ARENA_MAX`` is in the environment (glibc applied that one at start, and it wins,
    here and in the children)."""
    if arenas < 1:
        raise ValueError(f"arenas must be at least 1, not {arenas}")
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    os.environ["MALLOC_ARENA_MAX"] = str(arenas)
    mallopt = _glibc("mallopt", (ctypes.c_int, ctypes.c_int), ctypes.c_int)
    return mallopt is not None and mallopt(_M_ARENA_MAX, arenas) == 1


ARROW_PURGE_DELAY_MS = 0
"""Milliseconds mimalloc, Arrow's pool, keeps freed pages before it returns them
(``MIMALLOC_PURGE_DELAY``, unless the environment sets it)."""


def purge_arrow_memory_promptly(delay_ms: int = ARROW_PURGE_DELAY_MS) -> bool:
    """Have mimalloc, pyarrow's default memory pool, return the pages of freed Arrow buffers
    to the system after ``delay_ms`` in the processes started from now on (a local Ray's
    workers), by putting ``MIMALLOC_PURGE_DELAY`` into this process's environment. Returns
    ``False`` where the environment sets it already (that setting wins, here and in the
    children). A pool that has been used keeps the options it read then: the driver's, which
    allocates next to nothing through Arrow, is left as it is."""
    if delay_ms < 0:
        raise ValueError(f"delay_ms must be at least 0, not {delay_ms}")
    if "MIMALLOC_PURGE_DELAY" in os.environ:
        return False
    os.environ["MIMALLOC_PURGE_DELAY"] = str(delay_ms)
    return True


def return_free_heap_pages() -> bool:
    """Return the whole pages of free memory inside this process's glibc heap to the system
    (``malloc_trim(0)``): about 4 ms on a fragmented 60 MiB heap on this project's 2-core
    machine (14 ms the first time), and the driver calls it once per progress interval (10 s
    by default). Returns whether any memory was returned (``False`` too where the C library
    is not glibc)."""
    trim = _glibc("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)
    return trim is not None and trim(0) == 1
