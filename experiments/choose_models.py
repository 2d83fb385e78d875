"""Which base models should the demo concatenate? Measure every single model and every subset's concatenation.

    python experiments/choose_models.py --store stores/wordnet-demo --split dev [--out runs/choose-models.md]

Reports nDCG@10 ± SE (float32, full width, exact search) for each model alone and for the concatenation of every
subset (each L2-normalised, concatenated, renormalised), and the paired difference of each concatenation against
the best single model on the same queries. Select on the dev split; the test split is for the final report.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from datamodules.store.combine import combine
from datamodules.store.reader import EmbeddingStore
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.stats import format_mean_se, paired_difference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="stores/wordnet-demo")
    p.add_argument("--split", default="dev")
    p.add_argument("--models", nargs="+", default=None, help="model keys (default: all in the store)")
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = p.parse_args()

    store = EmbeddingStore(args.store)
    keys = args.models or store.models
    q_raw = {k: store.array(k, f"queries/{args.split}").read() for k in keys}
    c_raw = {k: store.array(k, "corpus").read() for k in keys}
    rows = []
    for r in range(1, len(keys) + 1):
        for subset in itertools.combinations(keys, r):
            q = combine([q_raw[k] for k in subset])
            c = combine([c_raw[k] for k in subset])
            ev = RetrievalEvaluator(
                store.qrels(args.split),
                store.ids(f"queries/{args.split}"),
                store.ids("corpus"),
                input_dim=q.shape[1],
            )
            (row,) = ev.evaluate("+".join(subset), q, c, precisions=["float32"])
            rows.append(row)
    best_single = max((r for r in rows if "+" not in r["method"]), key=lambda r: r["ndcg@10"])
    lines = [
        f"Store `{args.store}`, split `{args.split}` ({best_single['n_queries']} queries), float32, full width.",
        "",
        f"| models | dim | nDCG@10 ± SE | vs best single ({best_single['method']}) |",
        "|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: -r["ndcg@10"]):
        diff, se = paired_difference(row, best_single)
        lines.append(
            f"| {row['method']} | {row['dim']} | {format_mean_se(row['ndcg@10'], row['ndcg@10_se'])} | "
            f"{diff:+.4f} ± {se:.4f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
