"""`smec embed`: embed a dataset with frozen models into an on-disk store (resumable; a finished store is a no-op)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from datamodules.embed import DEFAULT_MODELS
    from datamodules.store.layout import DEFAULT_SHARD_ROWS, DTYPES

    parser.add_argument(
        "--dataset",
        default="wordnet-demo",
        help="built-in dataset (wordnet, wordnet-demo, debian, debian-demo) or a BEIR-format folder "
        "(default: %(default)s)",
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


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from datamodules.embed import embed_dataset
    from datamodules.store.reader import EmbeddingStore

    out = Path(args.out) if args.out else default_out(args.dataset)
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
    )
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
