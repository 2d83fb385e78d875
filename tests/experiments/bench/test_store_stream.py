"""store_stream's baselines read what the stream reads: ``raw-runs`` makes the stream's own reads, batch for batch."""

from __future__ import annotations

import pytest

from experiments.bench.store_stream import build, run_pairs, run_raw, run_raw_read, run_raw_runs, run_stream


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "store"
    build(path, rows=3000, dim=16, shard_rows=700)  # shards that blocks and runs cross
    return path


def test_raw_runs_reads_the_streams_batches(store):
    stream = run_stream(store, batch=64, combine=False, block_rows=500, window_blocks=2)
    runs = run_raw_runs(store, batch=64, block_rows=500, window_blocks=2, epochs=2)  # the same epoch twice
    assert runs["rows"] == stream["rows"] == 64 * (1000 // 64) * 3
    assert runs["checksum"] == stream["checksum"]
    assert runs["calls"] > 1  # the batches are cut into runs: 64 rows, runs of 2
    # Longer runs: other batches (another checksum), read in fewer calls
    longer = run_stream(store, batch=64, combine=False, block_rows=500, window_blocks=2, run_rows=16)
    assert longer["rows"] == stream["rows"] and longer["checksum"] != stream["checksum"]


def test_the_raw_read_reads_every_row_once(store):
    raw = run_raw(store, batch=64)
    assert raw["rows"] == 3000
    assert (
        raw["checksum"]
        != run_stream(store, batch=64, combine=False, block_rows=500, window_blocks=2)["checksum"]
    )


def test_the_sequential_preadv_read_equals_the_memmap_read(store):
    raw, read = run_raw(store, batch=64), run_raw_read(store, batch=64, epochs=2)
    assert read["rows"] == raw["rows"] == 3000 and read["checksum"] == raw["checksum"]


def test_the_sequential_read_in_run_sized_calls_reads_the_same_bytes(store):
    # 64-row batches in calls of 5 rows: batches and shards that end inside a call
    whole, runs = run_raw_read(store, batch=64), run_raw_read(store, batch=64, call_rows=5)
    assert runs["rows"] == whole["rows"] == 3000 and runs["checksum"] == whole["checksum"]
    assert (whole["call_rows"], runs["call_rows"]) == (64, 5)


def test_pairs_time_the_stream_against_its_own_reads_epoch_for_epoch(store):
    pairs = run_pairs(store, batch=64, block_rows=500, window_blocks=2, epochs=3)
    assert (
        pairs["rows"] == 64 * (1000 // 64) * 3
    )  # the stream's epoch, as in test_raw_runs_reads_the_streams_batches
    assert len(pairs["ratios"]) == 3 and all(r > 0 for r in pairs["ratios"])
