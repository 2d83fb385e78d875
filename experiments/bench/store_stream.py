"""Benchmark: stream epochs from a large synthetic store vs raw reads of the same shards.

Goals (issue: foundation): the stream's rows/s >= 0.8 x a raw sequential ``numpy.memmap`` read of the same
shards, and the streaming process's peak resident set (VmHWM, file-backed pages included) < 1 GiB whatever the
store's size. Each measurement runs in a fresh subprocess, so that one's resident set cannot leak into
another's, and streams ``--epochs`` epochs (its rows/s: the median epoch's, so that a process's one-time costs
and an epoch disturbed by outside load weigh as in training); the runs interleave (raw, raw-runs, stream, ...,
raw, raw-runs, stream, ...: ``--repeat`` rounds); a ratio is the median of the pairs' ratios, each pair run back
to back under the same outside load. Exit status 1 when a goal is missed.

Where a gap comes from, informative: the stream's order reads runs of 32 consecutive rows at random places of a
window (so that a batch of 1,024 mixes 32 places; the ``run_rows`` option), one ``preadv`` each. ``raw-runs``
makes exactly those calls, planned before the clock starts, into a fresh buffer per batch: raw-runs / raw is
what the order costs, stream / raw-runs what the stream adds (planning, bookkeeping, tensors). ``raw-read`` is
the sequential pass through the stream's system call (one ``preadv`` per batch, no memory map), informative:
on one machine the memory-map read moved 2.4x within an hour (6.3M, then 2.7M rows/s) while the stream moved
15% (4.0M, 3.6M, 3.4M), so the goal's ratio read 0.63, then 1.30 and 1.28; raw-read, beside the slow map,
ran 6.1M rows/s (stream / raw-read 0.56). The stream at longer runs (``--long-run-rows``, fewer places per
batch) is timed too: longer runs change every batch, hence every fit.

The stream opens the store as training does, with verification on: every shard is hashed (sha256) and scanned
for NaN/Inf once, when the DataModule opens it; that time is reported apart (it is not part of the epoch). The
stream with verification off (``verify=False``: no hash, each batch scanned for NaN/Inf as it is read) is
reported too, informative, no goal.

    python experiments/bench/store_stream.py [--rows 2000000] [--dim 1536] [--store /tmp/smec-bench-store] [--cold]
        [--step-ms 0.5] [--long-run-rows 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def checksum(x: np.ndarray) -> float:
    """What a consumer touches of a batch: its first column, weighted by position (so order counts)."""
    return float(np.dot(np.asarray(x[:, 0], dtype=np.float64), np.arange(1, len(x) + 1)))


def build(store: Path, rows: int, dim: int, shard_rows: int) -> None:
    from datamodules.store.reader import EmbeddingStore
    from datamodules.store.writer import StoreWriter, TextSetSpec

    try:
        s = EmbeddingStore(store, verify=False)
        if s.is_complete("synthetic", "corpus") and len(s.array("synthetic", "corpus")) == rows:
            return
    except Exception:
        pass
    print(f"building a synthetic {rows:,} x {dim} float16 store at {store} ...", file=sys.stderr)
    ids = [str(i) for i in range(rows)]
    writer = StoreWriter(
        store,
        dataset=f"synthetic-{rows}x{dim}",
        fingerprint=f"synthetic-{rows}x{dim}",
        text_sets=[TextSetSpec("corpus", ids)],
        qrels={},
    )
    rng = np.random.default_rng(0)
    writer.write(
        "synthetic",
        "corpus",
        dim=dim,
        encode=lambda a, b: rng.random((b - a, dim), dtype=np.float32) - 0.5,
        model_info={"spec": "synthetic"},
        dtype="float16",
        shard_rows=shard_rows,
    )


def evict(store: Path) -> None:
    """Drop the store's pages from the page cache (POSIX_FADV_DONTNEED: no privileges needed)."""
    for path in sorted(store.glob("*/*/*.npy")):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@contextmanager
def shard_fds(arr) -> Iterator[list[int]]:
    """A read-only descriptor per shard file of ``arr``, closed on exit (the bare preadv loops' files)."""
    fds = [os.open(path, os.O_RDONLY) for path in arr._files]
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def timed(epoch: Callable[[], tuple[int, float]], epochs: int, **extra: Any) -> dict:
    """Run ``epoch`` (returns rows, checksum) ``epochs`` times; rows/s of the median epoch, the first's checksum.

    Several epochs per process, as in training: a one-time cost of the process's first pass over its code and
    buffers weighs on every reader alike, and an epoch disturbed by outside load is outvoted.
    """
    seconds, first = [], None
    for _ in range(epochs):
        t0 = time.perf_counter()
        rows, total = epoch()
        seconds.append(time.perf_counter() - t0)
        first = (rows, total) if first is None else first
    dt = float(np.median(seconds))
    return {
        "rows": first[0],
        "seconds": dt,
        "rows_per_s": first[0] / dt,
        "vm_hwm_mib": vm_hwm_mib(),
        "checksum": first[1],
        **extra,
    }


def run_raw(store: Path, batch: int, epochs: int = 1) -> dict:
    from datamodules.store.reader import EmbeddingStore

    arr = EmbeddingStore(store, verify=False).array("synthetic", "corpus")

    def epoch() -> tuple[int, float]:
        n, total = 0, 0.0
        for path, count in zip(arr._files, [s["rows"] for s in arr.manifest["shards"]]):
            mm = np.load(path, mmap_mode="r")
            for i in range(0, count, batch):
                b = np.array(mm[i : i + batch])  # copy out of the map, like any consumer must
                total += checksum(b)
                n += len(b)
        return n, total

    return timed(epoch, epochs)


def run_raw_read(store: Path, batch: int, epochs: int = 1) -> dict:
    """The sequential pass through the stream's system call: one ``preadv`` per batch of consecutive rows into a
    fresh buffer (the raw read without a memory map's page faults)."""
    from datamodules.store.reader import EmbeddingStore

    arr = EmbeddingStore(store, verify=False).array("synthetic", "corpus")
    row_bytes = arr.dim * arr.dtype.itemsize
    with shard_fds(arr) as fds:

        def epoch() -> tuple[int, float]:
            n, total = 0, 0.0
            for fd, at, count in zip(fds, arr._data_offsets, [s["rows"] for s in arr.manifest["shards"]]):
                for i in range(0, count, batch):
                    out = np.empty((min(batch, count - i), arr.dim), dtype=arr.dtype)
                    os.preadv(fd, [memoryview(out.reshape(-1).view(np.uint8))], at + i * row_bytes)
                    total += checksum(out)
                    n += len(out)
            return n, total

        return timed(epoch, epochs)


def run_stream(
    store: Path,
    batch: int,
    block_rows: int,
    window_blocks: int,
    *,
    combine: bool = False,
    step_s: float = 0.0,
    read_ahead: int = 0,
    verify: bool = True,
    run_rows: int | None = None,
    epochs: int = 1,
) -> dict:
    dm = datamodule(
        store, batch, block_rows, window_blocks, read_ahead=read_ahead, verify=verify, run_rows=run_rows
    )
    t_open = time.perf_counter()
    loader = dm.train_dataloader()  # opens the shards: with verify, hashes and scans each one
    open_s = time.perf_counter() - t_open

    def epoch() -> tuple[int, float]:
        loader.sampler.set_epoch(0)  # the same epoch each time: raw-runs replays its order
        n, total = 0, 0.0
        for b in loader:
            if combine:
                b = dm.on_after_batch_transfer(b, 0)
                x = b["x"]
            else:
                x = b["x"][0]
            total += checksum(x.numpy())
            n += len(x)
            if step_s:
                time.sleep(step_s)  # a training step that leaves the CPU free, like one waiting on a GPU
        return n, total

    return timed(epoch, epochs, open_s=open_s)


def datamodule(store: Path, batch: int, block_rows: int, window_blocks: int, **kw):
    from datamodules.embedding import EmbeddingDataModule

    return EmbeddingDataModule(
        str(store),
        batch_size=batch,
        include_train_queries=False,
        block_rows=block_rows,
        window_blocks=window_blocks,
        **kw,
    )


def run_raw_runs(store: Path, batch: int, block_rows: int, window_blocks: int, epochs: int = 1) -> dict:
    """The stream's reads in a bare loop: each batch's runs of consecutive rows, one ``preadv`` per run, into a
    fresh buffer per batch; the plan (rows, runs, file offsets) is made before the clock starts."""
    dm = datamodule(store, batch, block_rows, window_blocks, verify=False)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    stream = loader.dataset
    arr = stream.segments[0].arrays[0]
    row_bytes = arr.dim * arr.dtype.itemsize
    with shard_fds(arr) as fds:
        plan = []
        for rows in stream.batch_rows():
            # runs: cut where rows stop being consecutive or cross a shard edge
            shard = np.searchsorted(arr._offsets, rows, side="right") - 1
            first = np.flatnonzero((np.diff(rows, prepend=-2) != 1) | (np.diff(shard, prepend=-1) != 0))
            size = np.diff(first, append=len(rows)) * row_bytes
            pos = (
                np.asarray(arr._data_offsets)[shard[first]]
                + (rows[first] - arr._offsets[shard[first]]) * row_bytes
            )
            calls = zip(
                [fds[k] for k in shard[first].tolist()],
                pos.tolist(),
                size.tolist(),
                (first * row_bytes).tolist(),
            )
            plan.append((len(rows), list(calls)))

        def epoch() -> tuple[int, float]:
            n, total = 0, 0.0
            for count, calls in plan:
                out = np.empty((count, arr.dim), dtype=arr.dtype)
                view = memoryview(out.reshape(-1).view(np.uint8))
                for fd, at, nbytes, dst in calls:
                    os.preadv(fd, [view[dst : dst + nbytes]], at)
                total += checksum(out)
                n += count
            return n, total

        return timed(epoch, epochs, calls=sum(len(c) for _, c in plan) / max(1, len(plan)))


def child(mode: str, args: argparse.Namespace) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--store",
            args.store,
            "--batch",
            str(args.batch),
            "--block-rows",
            str(args.block_rows),
            "--window-blocks",
            str(args.window_blocks),
            "--step-ms",
            str(args.step_ms),
            "--long-run-rows",
            str(args.long_run_rows),
            "--epochs",
            str(args.epochs),
            *(["--cold"] if args.cold else []),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--shard-rows", type=int, default=65536)
    p.add_argument("--store", default="/tmp/smec-bench-store")
    p.add_argument(
        "--repeat", type=int, default=5, help="rounds of every measurement, interleaved; medians are reported"
    )
    p.add_argument("--block-rows", type=int, default=16384)
    p.add_argument("--window-blocks", type=int, default=2)
    p.add_argument(
        "--cold",
        action="store_true",
        help="evict the store from the page cache before every run (reads from disk; the goals are for a warm cache)",
    )
    p.add_argument(
        "--step-ms",
        type=float,
        default=0.0,
        help="also time the stream under a simulated GIL-free training step of this many ms a batch, with and "
        "without the read-ahead thread (informative, no goal)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs per measurement (one process each); its rows/s is the median epoch's (1 with --cold)",
    )
    p.add_argument(
        "--long-run-rows",
        type=int,
        default=128,
        help="also time the stream with shuffle runs of this many rows (run_rows; informative, no goal)",
    )
    p.add_argument(
        "--child",
        choices=[
            "raw",
            "raw-read",
            "raw-runs",
            "stream",
            "stream+combine",
            "stream-unverified",
            "stream-long-runs",
            "step",
            "step+read-ahead",
        ],
        help=argparse.SUPPRESS,
    )
    args = p.parse_args()
    if args.child:
        if args.cold:
            evict(Path(args.store))
        store, batch, blocks = Path(args.store), args.batch, (args.block_rows, args.window_blocks)
        epochs = 1 if args.cold else args.epochs  # a second epoch would read from the page cache
        stream_modes = {
            "stream": {},
            "stream+combine": {"combine": True},
            "stream-unverified": {"verify": False},
            "stream-long-runs": {"run_rows": args.long_run_rows},
            "step": {"step_s": args.step_ms / 1e3},
            "step+read-ahead": {"step_s": args.step_ms / 1e3, "read_ahead": 2},
        }
        if args.child == "raw":
            result = run_raw(store, batch, epochs=epochs)
        elif args.child == "raw-read":
            result = run_raw_read(store, batch, epochs=epochs)
        elif args.child == "raw-runs":
            result = run_raw_runs(store, batch, *blocks, epochs=epochs)
        else:
            result = run_stream(store, batch, *blocks, epochs=epochs, **stream_modes[args.child])
        print(json.dumps(result))
        return 0
    build(Path(args.store), args.rows, args.dim, args.shard_rows)
    if not args.cold:
        child("raw", args)  # warm the page cache so both runs read from the same place

    # Truly interleaved (raw, raw-runs, stream, raw, ...): each pair runs back to back under the same load from
    # whatever else shares the machine, and the goal is the median of the pairs' ratios, not best against best.
    modes = [
        "raw",
        "raw-read",
        "raw-runs",
        "stream",
        "stream-long-runs",
        "stream+combine",
        "stream-unverified",
    ]
    if args.step_ms:
        modes += ["step", "step+read-ahead"]
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.repeat):
        for mode in modes:
            runs[mode].append(child(mode, args))

    def median_run(mode: str) -> dict:
        ordered = sorted(runs[mode], key=lambda r: r["rows_per_s"])
        return ordered[len(ordered) // 2]

    def pairs(a: str, b: str) -> list[float]:
        """Per round, b's rows/s over a's (the two ran back to back)."""
        return [y["rows_per_s"] / x["rows_per_s"] for x, y in zip(runs[a], runs[b])]

    order, own = pairs("raw", "stream"), pairs("raw-runs", "stream")
    long_order = pairs("raw", "stream-long-runs")
    ratio = float(np.median(order))
    raw, runs_raw, stream, full = (median_run(m) for m in ("raw", "raw-runs", "stream", "stream+combine"))
    raw_read = median_run("raw-read")
    unverified, long_runs = median_run("stream-unverified"), median_run("stream-long-runs")
    print(
        f"store: {args.rows:,} x {args.dim} float16 ({args.rows * args.dim * 2 / 2**30:.1f} GiB), batch {args.batch}"
        + (", cold page cache" if args.cold else "")
    )
    for name, r in (
        ("raw numpy.memmap read", raw),
        ("raw-read (1 preadv/batch)", raw_read),
        (f"raw-runs ({runs_raw['calls']:.0f} preadv/batch)", runs_raw),
        ("EmbeddingDataModule stream", stream),
        (f"stream, run_rows {args.long_run_rows}", long_runs),
        ("stream + combine (CPU)", full),
        ("stream, verification off", unverified),
    ):
        print(
            f"  {name:<28} {r['rows_per_s']:>12,.0f} rows/s   peak RSS {r['vm_hwm_mib']:>7.0f} MiB   ({r['seconds']:.1f} s)"
        )
    gib = args.rows * args.dim * 2 / 2**30
    open_s = min(stream["open_s"], full["open_s"])
    print(
        f"verification when the store is opened (sha256 + NaN/Inf scan of every shard, once per process): "
        f"{open_s:.1f} s ({gib / open_s:.2f} GiB/s); with verification off: {unverified['open_s']:.2f} s to open, "
        f"and the NaN/Inf scan of each batch costs {100 * (1 - unverified['rows_per_s'] / stream['rows_per_s']):.0f}% "
        "of the stream's rows/s (informative, no goal)"
    )
    if args.step_ms:
        inline, ahead = median_run("step"), median_run("step+read-ahead")
        for name, r in (
            (f"+ {args.step_ms:g} ms step", inline),
            (f"+ {args.step_ms:g} ms step, read_ahead 2", ahead),
        ):
            print(f"  {name:<28} {r['rows_per_s']:>12,.0f} rows/s   ({r['seconds']:.1f} s)")
        print(
            f"read-ahead overlap: epoch {inline['seconds']:.1f} s -> {ahead['seconds']:.1f} s (informative, no goal)"
        )
    ok_speed = ratio >= 0.8
    ok_mem = all(r["vm_hwm_mib"] < 1024 for r in (stream, full, long_runs))
    for name, values in (
        ("stream / raw", order),
        ("stream / raw-read", pairs("raw-read", "stream")),
        ("stream / raw-runs", own),
        (f"stream at run_rows {args.long_run_rows} / raw", long_order),
    ):
        print(f"{name} per pair: {', '.join(f'{r:.2f}' for r in values)}; median {np.median(values):.2f}")
    print(
        f"informative: the order's cost, raw-runs / raw = {np.median(pairs('raw', 'raw-runs')):.2f} (the shuffle's "
        f"runs of rows, one system call each, against one sequential pass); the stream's own, stream / raw-runs = "
        f"{np.median(own):.2f}"
    )
    print(
        f"stream / raw = {ratio:.2f}, median of {len(order)} pairs (goal >= 0.80): {'OK' if ok_speed else 'MISSED'}"
    )
    print(
        f"stream peak RSS {max(r['vm_hwm_mib'] for r in (stream, full, long_runs)):.0f} MiB (goal < 1024): "
        f"{'OK' if ok_mem else 'MISSED'}"
    )
    return 0 if ok_speed and ok_mem else 1


if __name__ == "__main__":
    sys.exit(main())
