"""`smec mteb`: evaluate an exported model (`smec export`) with MTEB 2.x.

Tasks: the built-in datasets (wordnet, debian and their subsets) and BEIR folders run offline as MTEB custom retrieval
tasks; any other name is an MTEB task, loaded from the Hugging Face hub. Results: mteb's own files under
``<out>/mteb/`` and smec result rows under ``<out>/<task>/results.json``. See smec/export/mteb_run.py.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from datamodules.datasets import BUILTIN_DATASETS

    parser.add_argument("--model", required=True, help="folder written by `smec export`")
    parser.add_argument(
        "--tasks",
        nargs="+",
        required=True,
        help=f"built-in datasets ({', '.join(BUILTIN_DATASETS)}), BEIR folders, or MTEB task names (need the hub)",
    )
    parser.add_argument("--out", required=True, help="output folder (mteb/<task>.json, <task>/results.json)")
    parser.add_argument(
        "--split", default="test", help="qrels split of the built-in / BEIR tasks (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="texts per encode batch (default: %(default)s, as smec embed)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from smec.export.mteb_run import run_mteb

    rows = run_mteb(
        args.model, args.tasks, args.out, split=args.split, batch_size=args.batch_size, device=args.device
    )
    for row in rows:
        if "ndcg@10" in row:
            extra = f", mteb {row['mteb_ndcg@10']:.5f}" if "mteb_ndcg@10" in row else ""
            se = f" ± {row['ndcg@10_se']:.3f}" if row.get("ndcg@10_se") is not None else ""
            print(f"{row['task']}: nDCG@10 {row['ndcg@10']:.4f}{se}{extra} ({row['precision']}@{row['dim']})")
        else:
            print(f"{row['task']}: {row['main_score_name']} {row['main_score']:.4f}")
    print(f"-> {args.out}/mteb/ (mteb results), {args.out}/<task>/results.json (smec rows)")
    return 0
