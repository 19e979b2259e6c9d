"""Ray Data's per-block statistics in the driver, bounded.

Every map operator of Ray Data (2.56 to 2.60 at least) keeps one ``BlockStats`` per block it
has handed downstream, for as long as the dataset lives (``MapOperator._output_blocks_stats``,
ray-project/ray#66016): the driver's memory grows with the blocks a run has made, which for
the batch job is the number of input rows over ``rows_per_read_block``. Measured on the job
with ``builtin:passthrough`` (``benchmarks/batch_memory.py``): driver peak RSS 247 MiB at 10k
rows, 416 MiB at 500k. The list feeds only ``Dataset.stats()``, the run's statistics report,
which the job never prints; :func:`bound_block_stats` keeps the newest
:data:`KEPT_BLOCK_STATS` of them per operator, so that report still describes the latest
blocks. With it the driver grew 244 -> 305 MiB from 10k to 500k rows.

The same lists travel: every 5 s the driver sends the dataset's statistics, every kept
``BlockStats`` of every operator included (~240 bytes each), to Ray Data's stats actor
(``_StatsManager.update_iteration_metrics``). An argument over Ray's inline limit (100 KiB)
is put into the object store by the driver, a fresh object each time, and the driver's RSS
grew by the store pages it had written (13-18 MiB over 100k rows, none with the updates
off). :data:`KEPT_BLOCK_STATS` is small enough that the update of the job's four operators
stays under half that limit (at most 32 kept per operator, ~31 kB, plus ~16 kB of the
rest; ``benchmarks/RESULTS.md``); ``tests/ray_jobs/test_data_stats.py`` checks that the
update no longer grows with the blocks.

It changes one private attribute of Ray Data and so is checked against the installed Ray by
``tests/ray_jobs/test_data_stats.py``: if Ray renames it, the test fails (the job keeps
working, only unbounded again, and says so in one warning).
"""

from __future__ import annotations

import functools

from apa.log import get_logger

log = get_logger(__name__)

KEPT_BLOCK_STATS = 16
"""Block statistics kept per operator (16 to 32): a sample for ``Dataset.stats()``, small
enough that the driver's statistics updates stay inline (see the module docstring)."""


class _NewestBlockStats(list):
    """A list that, past twice ``keep`` entries, drops all but the newest ``keep``: still a
    list, so Ray's stats thread may iterate it while the executor appends (a ``deque``
    raises "mutated during iteration" there)."""

    def __init__(self, items=(), *, keep: int) -> None:
        super().__init__(items)
        self.keep = keep
        self._trim()

    def __reduce__(self):
        """Pickled (to Ray's stats actor) as a plain list."""
        return list, (list(self),)

    def _trim(self) -> None:
        if len(self) > 2 * self.keep:
            del self[: len(self) - self.keep]

    def append(self, item) -> None:
        super().append(item)
        self._trim()

    def extend(self, items) -> None:
        super().extend(items)
        self._trim()


def bound_block_stats(keep: int = KEPT_BLOCK_STATS) -> bool:
    """Make every Ray Data map operator created from now on in this process keep only its
    newest ``keep`` to ``2 * keep`` block statistics. Idempotent (a later call changes
    ``keep``). Returns ``False``, with a warning, where the installed Ray has no such list
    to bound."""
    from ray.data._internal.execution.operators.map_operator import MapOperator

    init = getattr(MapOperator.__init__, "__wrapped__", MapOperator.__init__)
    if "_output_blocks_stats" not in init.__code__.co_names:
        log.warning(
            "ray_data_block_stats_unbounded",
            note="this Ray's map operators keep no _output_blocks_stats list; the driver's "
            "memory may grow with the blocks of the run",
        )
        return False

    @functools.wraps(init)
    def bounded_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self._output_blocks_stats = _NewestBlockStats(self._output_blocks_stats, keep=keep)

    MapOperator.__init__ = bounded_init
    return True
