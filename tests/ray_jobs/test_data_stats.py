"""Ray Data's per-block statistics stay bounded in the driver (ray_jobs/data_stats.py)."""

from __future__ import annotations

import gc
import pickle

import pytest

from ray_jobs.data_stats import bound_block_stats

pytestmark = pytest.mark.integration


def map_operators() -> list:
    from ray.data._internal.execution.operators.map_operator import MapOperator

    return [o for o in gc.get_objects() if isinstance(o, MapOperator)]


def run_blocks(ray, blocks: int):
    """A dataset of ``blocks`` one-row blocks through one map stage, consumed whole; returns
    it with its map operators (new since the call)."""
    before = {id(o) for o in map_operators()}
    ds = ray.data.range(blocks, override_num_blocks=blocks).map_batches(
        lambda b: {"id": b["id"] * 2}, batch_size=1
    )
    total = sum(len(b["id"]) for b in ds.iter_batches(batch_size=None))
    assert total == blocks
    return ds, [o for o in map_operators() if id(o) not in before]


def test_map_operators_keep_only_the_newest_block_stats(ray_local) -> None:
    """Without the bound, the operator keeps a statistic per block it handed on (the growth
    seen at 500k rows); with it, the newest ``keep`` to ``2 * keep``; the dataset's stats
    report still works."""
    from ray.data._internal.execution.operators.map_operator import MapOperator

    init = MapOperator.__init__  # a batch job run earlier in this process may have bounded it
    original = getattr(init, "__wrapped__", init)
    try:
        MapOperator.__init__ = original
        _, ops = run_blocks(ray_local, 40)
        assert max(len(o._output_blocks_stats) for o in ops) == 40  # what Ray keeps by itself
        assert bound_block_stats(keep=8) is True
        assert bound_block_stats(keep=8) is True  # twice: wraps the original once
        assert MapOperator.__init__.__wrapped__ is original
        ds, ops = run_blocks(ray_local, 40)
        assert ops
        for o in ops:
            assert isinstance(o._output_blocks_stats, list)  # Ray's stats thread iterates it
            assert 8 <= len(o._output_blocks_stats) <= 16
            copy = pickle.loads(pickle.dumps(o._output_blocks_stats))  # to the stats actor
            assert type(copy) is list and copy == list(o._output_blocks_stats)
        assert "MapBatches" in ds.stats()
    finally:
        MapOperator.__init__ = init


def test_statistics_updates_stay_inline_with_the_bound(ray_local, monkeypatch) -> None:
    """The dataset's statistics, sent to Ray Data's stats actor every few seconds and at the
    end of an iteration, carry every kept block statistic. Unbounded they grow with the
    blocks; bounded they stay the same size, under Ray's inline-argument limit (above it the
    driver writes each update into the object store and its RSS grows by those pages)."""
    from ray import cloudpickle
    from ray.data._internal.execution.operators.map_operator import MapOperator
    from ray.data._internal.stats import _StatsManager

    sent: list[int] = []
    original_update = _StatsManager.update_iteration_metrics

    def update(stats, *args, **kwargs):
        sent.append(len(cloudpickle.dumps(stats)))
        return original_update(stats, *args, **kwargs)

    monkeypatch.setattr(_StatsManager, "update_iteration_metrics", staticmethod(update))

    def last_update(blocks: int) -> int:
        sent.clear()
        run_blocks(ray_local, blocks)
        assert sent, "no statistics update was sent"
        return sent[-1]

    init = MapOperator.__init__
    original = getattr(init, "__wrapped__", init)
    try:
        MapOperator.__init__ = original
        unbounded = last_update(40), last_update(160)
        assert unbounded[1] > unbounded[0] + 120 * 100  # ~100+ bytes per block statistic
        bound_block_stats(keep=8)
        bounded = last_update(40), last_update(160)
    finally:
        MapOperator.__init__ = init
    assert abs(bounded[1] - bounded[0]) < 4096, bounded
    assert bounded[1] < 100 * 1024 // 4
