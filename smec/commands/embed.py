"""`smec embed`: embed a dataset with frozen models into an on-disk store (resumable; a finished store is a no-op)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from datamodules.datasets import BUILTIN_DATASETS
    from datamodules.embed import DEFAULT_MODELS
    from datamodules.store.layout import DEFAULT_SHARD_ROWS, DTYPES

    parser.add_argument(
        "--dataset",
        default="wordnet-demo",
        help=f"built-in dataset ({', '.join(BUILTIN_DATASETS)}) or a BEIR-format folder (default: %(default)s)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        metavar="SPEC",
        help="model specs: offline short names, sentence-transformers names/folders, or module:callable "
        "(default: %(default)s)",
    )
    parser.add_argument("--out", default=None, help="store folder (default: stores/<dataset name>)")
    parser.add_argument(
        "--dtype", default="float16", choices=DTYPES, help="storage dtype (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="encoder batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="rows per shard (default: %(default)s)"
    )
    parser.add_argument("--splits", nargs="+", default=None, help="query splits to embed (default: all)")
    parser.add_argument(
        "--device", default="cpu", help="torch device for the encoders (default: %(default)s)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="recompute every shard's sha256 (and scan for NaN/Inf) at the end, finished shards included",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    split = parser.add_argument_group(
        "embedding with several workers (processes, GPUs, SLURM array tasks; README, Data)"
    )
    split.add_argument(
        "--worker-index",
        type=int,
        default=None,
        metavar="I",
        help="embed only shards s with s %% N == I of each (model, text set) (default: SLURM_ARRAY_TASK_ID, "
        "else RANK, else one process does all)",
    )
    split.add_argument(
        "--num-workers-total",
        type=int,
        default=None,
        metavar="N",
        help="how many workers share the job (default: SLURM_ARRAY_TASK_COUNT, else WORLD_SIZE)",
    )
    split.add_argument(
        "--merge",
        action="store_true",
        help="once every worker has finished: check each shard against its worker's record, write the manifests",
    )


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    from pathlib import Path

    from datamodules.embed import embed_dataset
    from datamodules.errors import InputError
    from datamodules.store.reader import EmbeddingStore
    from datamodules.store.workers import resolve_share

    share, source = resolve_share(args.worker_index, args.num_workers_total, os.environ, merge=args.merge)
    if share is not None and args.verify:
        raise InputError("--verify: checks a finished store; give it to the --merge, not to a worker")
    out = Path(args.out) if args.out else default_out(args.dataset)
    if share is not None:
        print(
            f"smec embed: {share} (from {source}): shards s with s % {share.total} == {share.index}",
            file=sys.stderr,
        )
    embed_dataset(
        args.dataset,
        args.models,
        out,
        dtype=args.dtype,
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        splits=args.splits,
        device=args.device,
        progress=not args.no_progress,
        share=share,
        merge=args.merge,
    )
    if share is not None:
        print(f"{share}: done; once every worker is, finish the store with the same command and --merge")
        return 0
    store = EmbeddingStore(out)
    if args.verify:
        store.verify()
    print(store.summary())
    return 0


def default_out(dataset: str):
    """``stores/<dataset name>``, the name as the dataset loader gives it (a folder's resolved name)."""
    from pathlib import Path

    from datamodules.datasets import BUILTIN_DATASETS
    from datamodules.errors import InputError
    from datamodules.paths import name_problem

    name = dataset if dataset in BUILTIN_DATASETS else Path(dataset).expanduser().resolve().name
    problem = name_problem(name)
    if problem is not None:
        raise InputError(f"--dataset {dataset!r}: no folder name to store it under ({problem}); give --out")
    return Path("stores") / name
