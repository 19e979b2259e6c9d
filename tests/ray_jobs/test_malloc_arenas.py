"""The batch job's malloc arena limit (ray_jobs/malloc_arenas.py), observed through glibc's
own account of its arenas in a fresh process and in the processes it starts."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from ray_jobs.malloc_arenas import limit_malloc_arenas

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
    reason="glibc's mallopt and malloc_info",
)

# Eight threads allocate and free blocks through malloc (bytearrays of 64 KiB: above
# pymalloc's small objects, below the mmap threshold), held at a barrier so they all live at
# once; then glibc's malloc_info lists one <heap> per arena.
PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, json, os, sys, tempfile, threading
    from ray_jobs.malloc_arenas import limit_malloc_arenas

    limited = limit_malloc_arenas(2) if sys.argv[1] == "limit" else None
    barrier = threading.Barrier(8)

    def work():
        blocks = [bytearray(65536) for _ in range(32)]
        barrier.wait()
        del blocks

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.fclose.argtypes = (ctypes.c_void_p,)
    path = os.path.join(tempfile.mkdtemp(), "malloc.xml")
    f = libc.fopen(path.encode(), b"w")
    assert libc.malloc_info(0, f) == 0
    libc.fclose(f)
    print(json.dumps({"limited": limited, "arenas": open(path).read().count("<heap nr=")}))
    """
)


def probe(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=environ
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@glibc
def test_threads_share_the_limited_arenas() -> None:
    """Without the limit the eight threads get arenas of their own (glibc allows eight per
    core); with it, all share two."""
    free = probe("free")
    assert free["arenas"] >= 4, free
    limited = probe("limit")
    assert limited == {"limited": True, "arenas": 2}


# A process that limits its arenas, then starts the probe without a limit of its own (as the
# driver starts a local Ray's processes).
PARENT = textwrap.dedent(
    """
    import subprocess, sys
    from ray_jobs.malloc_arenas import limit_malloc_arenas

    limit_malloc_arenas(2)
    child = subprocess.run([sys.executable, "-c", sys.argv[1], "free"], capture_output=True,
                           text=True, check=True)
    print(child.stdout)
    """
)


@glibc
def test_processes_started_after_the_call_share_the_limited_arenas() -> None:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", PARENT, PROBE], capture_output=True, text=True, env=environ
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"limited": None, "arenas": 2}


@glibc
def test_the_environment_wins() -> None:
    """``MALLOC_ARENA_MAX`` given at start is glibc's own setting; the call leaves it."""
    assert probe("limit", MALLOC_ARENA_MAX="3") == {"limited": False, "arenas": 3}


def test_at_least_one_arena() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        limit_malloc_arenas(0)
