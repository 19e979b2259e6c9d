"""Fewer malloc arenas in the batch job's processes, so that their memory stays flat.

glibc gives threads their own malloc arenas, up to eight per core. The driver of a Ray Data
job runs dozens of threads (Ray's core worker, gRPC, the streaming executor, its stats
thread); memory one of them frees stays in its arena, in pieces the others do not reuse,
and the driver's anonymous memory grew with the length of the run although its live heap
did not (``benchmarks/RESULTS.md``, "Batch job memory at corpus scale": 142 -> 153 MiB from
10k to 100k rows; with two arenas 140 -> 144 MiB; jemalloc kept as much as glibc's default).

:func:`limit_malloc_arenas` sets glibc's ``M_ARENA_MAX`` at run time, which is the same as
starting the process with ``MALLOC_ARENA_MAX`` in its environment, for every launch of the
job (``python -m``, ``ray job submit``, a KubeRay RayJob). It must run before the process
has made more than a few arenas, that is before Ray starts its threads: glibc fixes the
limit the first time it needs it.

Ray's own processes have the same threads and grew the same way: Ray Data's stats actor
(``ray::_StatsActor``, which the driver creates) went from 104 to 133 MiB of anonymous
memory over a 100k-row run, and stayed at 108-109 MiB with ``MALLOC_ARENA_MAX=2``; the job's
rows per second did not change (``benchmarks/RESULTS.md``). The call therefore also puts
``MALLOC_ARENA_MAX`` into this process's environment, which the processes it starts inherit:
a local Ray's GCS, raylet and workers, when the driver starts one. A cluster's processes get
it from their pods' environment (the Helm chart's ``common.mallocArenaMax``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MALLOC_ARENAS = 2
"""Arenas the threads of each of the job's processes share (glibc's ``MALLOC_ARENA_MAX``,
unless the environment sets it)."""

_M_ARENA_MAX = -8
"""``mallopt``'s parameter number for the arena limit (glibc's ``malloc.h``)."""


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
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(_M_ARENA_MAX, arenas) == 1
