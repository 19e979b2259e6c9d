"""Failpoints: named places in the code where a test can make a process die, once.

Fault-injection tests must kill a worker at an exact step (a write task just after its
commit marker, say) across process boundaries: Ray runs the step in a worker process the
test cannot reach with a monkeypatch. A failpoint is a named call, :func:`hit`, placed
between two steps; it does nothing unless the environment variable ``APA_FAILPOINTS``
names it::

    APA_FAILPOINTS="batch.commit.after_commit=exit@/tmp/markers"

``<name>=<action>@<marker directory>``, several separated by ``;``. The action runs at most
once per marker directory (the first process to create ``<marker dir>/<name>`` atomically
runs it, every later hit passes), so the retry the test wants to observe succeeds. Actions:

``exit``   ``os._exit(137)``: the process dies at once, as under ``kill -9`` or the OOM
           killer, without unwinding (no ``finally``, no flush); Ray sees a dead worker.
``raise``  raises :class:`FailpointError` (an application error, for in-process tests).

With ``APA_FAILPOINTS`` unset (production) :func:`hit` costs one dictionary lookup.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "APA_FAILPOINTS"
EXIT_CODE = 137
"""what a process killed with SIGKILL reports (128 + 9)"""


class FailpointError(RuntimeError):
    """Raised by a failpoint whose action is ``raise``."""


def _parse(spec: str) -> dict[str, tuple[str, str]]:
    """``"a=exit@/d;b=raise@/e"`` -> ``{"a": ("exit", "/d"), "b": ("raise", "/e")}``.

    >>> _parse("batch.commit.after_commit=exit@/tmp/m; x=raise@/tmp/n")
    {'batch.commit.after_commit': ('exit', '/tmp/m'), 'x': ('raise', '/tmp/n')}
    """
    points = {}
    for item in spec.split(";"):
        item = item.strip()
        if not item:
            continue
        name, _, rest = item.partition("=")
        action, _, marker = rest.partition("@")
        if action not in ("exit", "raise") or not marker:
            raise ValueError(f"{ENV}: expected name=exit|raise@marker_dir, got {item!r}")
        points[name.strip()] = (action, marker)
    return points


def hit(name: str) -> None:
    """Run the failpoint ``name`` if ``APA_FAILPOINTS`` arms it and it has not fired yet."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    armed = _parse(spec).get(name)
    if armed is None:
        return
    action, marker_dir = armed
    Path(marker_dir).mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(Path(marker_dir) / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # fired once already: this is the retry
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    if action == "exit":
        os._exit(EXIT_CODE)
    raise FailpointError(f"failpoint {name} fired")


def fired(name: str, marker_dir: str | os.PathLike[str]) -> bool:
    """Whether failpoint ``name`` has fired for ``marker_dir`` (for tests)."""
    return (Path(marker_dir) / name).exists()
