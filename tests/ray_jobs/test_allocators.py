"""The batch job's allocators (ray_jobs/allocators.py): glibc's arena limit, observed through
glibc's own account of its arenas, and Arrow's pool returning freed memory, observed in the
anonymous memory of a fresh process and of the processes it starts."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from ray_jobs.allocators import limit_malloc_arenas, purge_arrow_memory_promptly

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
    from ray_jobs.allocators import limit_malloc_arenas

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
    from ray_jobs.allocators import limit_malloc_arenas

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


# A process allocates 200 Arrow buffers of 1 MiB through pyarrow's default pool (mimalloc),
# frees them, and reports how much anonymous memory it still holds above its start.
ARROW_PROBE = textwrap.dedent(
    """
    import json, time
    import pyarrow as pa

    def anon_mib():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) // 1024 for l in f if l.startswith("RssAnon"))

    start = anon_mib()
    buffers = [pa.allocate_buffer(1 << 20) for _ in range(200)]
    held = anon_mib() - start
    del buffers
    time.sleep(0.2)
    pa.allocate_buffer(64)  # the pool runs again after the delay
    print(json.dumps({"pool": pa.default_memory_pool().backend_name, "held": held,
                      "kept": anon_mib() - start}))
    """
)

# The same, started by a process that called purge_arrow_memory_promptly() first (as the
# driver starts a local Ray's workers).
ARROW_PARENT = textwrap.dedent(
    """
    import subprocess, sys
    from ray_jobs.allocators import purge_arrow_memory_promptly

    assert purge_arrow_memory_promptly()
    print(subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True,
                         check=True).stdout)
    """
)


def _arrow_run(*args: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "MIMALLOC_PURGE_DELAY"} | env
    out = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, env=environ)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status")
def test_processes_started_after_the_call_return_freed_arrow_memory() -> None:
    """Without the setting mimalloc keeps the freed 200 MiB; in a process started after the
    call it returns them."""
    unset = _arrow_run(ARROW_PROBE)
    assert unset["pool"] == "mimalloc" and unset["held"] >= 180, unset
    assert unset["kept"] >= 150, unset
    purged = _arrow_run(ARROW_PARENT, ARROW_PROBE)
    assert purged["held"] >= 180, purged
    assert purged["kept"] <= 30, purged


def test_the_environments_arrow_purge_delay_wins(monkeypatch) -> None:
    monkeypatch.setenv("MIMALLOC_PURGE_DELAY", "500")
    assert purge_arrow_memory_promptly() is False
    assert os.environ["MIMALLOC_PURGE_DELAY"] == "500"


def test_the_arrow_purge_delay_is_not_negative() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        purge_arrow_memory_promptly(-1)


# A process fills its heap with 100k blocks of 1,000 bytes (Python bytes objects past
# pymalloc's 512: glibc's malloc), frees 39 in 40 (the survivors pin the heap's pages, so
# free() cannot give them back), then reports its anonymous memory above its start before and
# after return_free_heap_pages().
TRIM_PROBE = textwrap.dedent(
    """
    import json
    from ray_jobs.allocators import return_free_heap_pages

    def anon_mib():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) / 1024 for l in f if l.startswith("RssAnon"))

    start = anon_mib()
    blocks = [bytes(1000) + bytes([i % 256]) for i in range(100_000)]
    survivors = blocks[::40]
    del blocks
    kept = anon_mib() - start
    returned = return_free_heap_pages()
    print(json.dumps({"kept": kept, "returned": returned, "after": anon_mib() - start}))
    """
)


@glibc
def test_free_heap_pages_go_back_to_the_system() -> None:
    """Of ~100 MiB allocated and 39 in 40 blocks freed, the fragmented heap keeps nearly all;
    the call returns the whole free pages (what stays is the pages survivors sit on)."""
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["kept"] >= 80, result
    assert result["returned"] is True, result
    assert result["after"] <= result["kept"] - 60, result
