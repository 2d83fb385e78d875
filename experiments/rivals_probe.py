"""Which training-free code is the strongest rival at each byte budget? The new codes against the grid's rows.

    python experiments/rivals_probe.py --store stores/wordnet-demo --split test [--out runs/rivals-probe]

On the store's concatenation (each model L2-normalised, concatenated, renormalised; 1152-d for the demo's three
models) and on its PCA (fit on 10,000 corpus rows), at each budget B bytes per vector (default 96, 48, 24, 12, 6
= 48x, 96x, 192x, 384x, 768x of the float32 input), every code gets the widest input that fits in B
(``dim_for_budget``) and one nDCG@10 row through ``evaluate_code`` (smec/evaluation/codes/grid.py):

* existing rows, through the evaluator itself: binary (median and sign thresholds) at 8 B dims, int8 at B
  dims and int4 at 2 B dims (min-max ranges, symmetric and asymmetric scoring); OPQ + PQ at 8 B bits for B >= 48
  (``--opq``, minutes on 2 cores);
* ITQ at 8 B bits on the PCA (on the concatenation faiss ``ITQ{8B}`` would do the same PCA itself); RaBitQ
  1/2/4-bit (on the concatenation: after a random projection to the width that fits); SQ8/SQ4 with quantile
  and optimised ranges at B / 2 B dims; for B >= 48, RQ with M = B codebooks and product LSQ (B / 3 slices of
  3 codebooks) on PCA-``--rq-dim`` (``--rq-concat``: RQ on the full concatenation too, minutes each);
  rescoring variants (shortlist 200, with the float32 vectors of the code's input: their 4 d bytes are listed
  apart, not in B).

Writes ``rivals.md`` (one table, best per budget in bold, each row's paired difference ± SE against the best
row of the grid's existing precisions at that budget) and ``rivals.json`` (rows without per-query values) under
``--out``, and prints the table. OPQ + PQ rows come from ``--opq`` (fitted here) or ``--reference`` (read from a
results.json of the same store and split).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from datamodules.store.combine import combine
from datamodules.store.reader import EmbeddingStore
from smec.evaluation.baselines import PCA, OPQProductQuantizer
from smec.evaluation.codes import dim_for_budget, make_code
from smec.evaluation.codes.grid import evaluate_code
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.results import read_results
from smec.evaluation.stats import paired_difference

EXISTING = ("binary", "int8", "int4", "pq")  # the grid's precisions today


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="stores/wordnet-demo")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--models", nargs="+", default=None, help="model keys (default: every model, in embedding order)"
    )
    p.add_argument("--budgets", nargs="+", type=int, default=[96, 48, 24, 12, 6], help="bytes per vector")
    p.add_argument("--opq", action="store_true", help="also OPQ + PQ at 8 B bits for B >= 48 (slow)")
    p.add_argument(
        "--reference",
        default=None,
        help="a results.json of the same store and split (e.g. smec compare's baselines/results.json) whose "
        "opq-pq rows join the table instead of --opq",
    )
    p.add_argument("--rq-dim", type=int, default=256, help="PCA width RQ is fitted on (default 256)")
    p.add_argument(
        "--rq-concat", action="store_true", help="also RQ on the full concatenation (minutes each)"
    )
    p.add_argument(
        "--additive-only", action="store_true", help="only the RQ / PLSQ rows (their fits are the slow part)"
    )
    p.add_argument("--no-additive", action="store_true", help="skip the RQ / PLSQ rows")
    p.add_argument("--out", default="runs/rivals-probe")
    args = p.parse_args()

    store = EmbeddingStore(args.store)
    keys = args.models or store.models
    queries = combine([store.array(k, f"queries/{args.split}").read() for k in keys])
    corpus = combine([store.array(k, "corpus").read() for k in keys])
    width = corpus.shape[1]
    ev = RetrievalEvaluator(
        store.qrels(args.split), store.ids(f"queries/{args.split}"), store.ids("corpus"), input_dim=width
    )
    start = time.perf_counter()
    pca = PCA(n_components=min(width, len(corpus))).fit(corpus)
    reps = {"concat": (queries, corpus), "pca": (pca.transform(queries), pca.transform(corpus))}
    print(f"{'+'.join(keys)}: {width}-d, {len(corpus)} docs, {len(queries)} {args.split} queries", flush=True)
    rows: list[dict[str, Any]] = []
    reference = []
    if args.reference:
        reference, _ = read_results(Path(args.reference))
        if reference and list(reference[0]["query_ids"]) != list(ev.scored_query_ids):
            raise SystemExit(
                f"{args.reference}: scored on other queries than this store's {args.split} split"
            )

    def add(row: dict[str, Any], budget: int, rep: str) -> None:
        row.update(budget=budget, rep=rep, bytes=row.get("bytes", row["bits"] // 8))
        row.setdefault("extra_bytes", 0)
        rows.append(row)
        print(
            f"  {budget:3d} B  {rep:7s} {row['precision']:14s} d={row['dim']:4d} {row['scoring']:28s} "
            f"nDCG@10 {row['ndcg@10']:.4f} ± {row['ndcg@10_se']:.4f}  fit {row.get('fit_s', 0):.1f}s",
            flush=True,
        )

    def additive(q: Any, c: Any, budget: int) -> None:
        rq_dim = min(args.rq_dim, width)
        add(evaluate_code(ev, make_code("rq", m=budget), "pca", q, c, rq_dim), budget, "pca")
        # Plain LSQ at m = budget solves a (256 m)^2 system per round: product LSQ, 3 codebooks per slice.
        if budget % 3 == 0 and rq_dim % (budget // 3) == 0:
            code = make_code("plsq", m=budget, splits=budget // 3)
            add(evaluate_code(ev, code, "pca", q, c, rq_dim), budget, "pca")

    for budget in args.budgets:
        print(f"budget {budget} bytes = {32 * width / (8 * budget):g}x", flush=True)
        for rep, (q, c) in reps.items():
            if args.additive_only:
                if budget >= 48 and rep == "pca":
                    additive(q, c, budget)
                continue
            # ---- the grid's existing rows, through the evaluator itself
            for precision, dim in (("binary", 8 * budget), ("int8", budget), ("int4", 2 * budget)):
                if dim > width:
                    continue
                variants = (
                    [("binary_threshold", t) for t in ("median", "sign")]
                    if precision == "binary"
                    else [("int_scoring", s) for s in ("symmetric", "asymmetric")]
                )
                for option, value in variants:
                    ev_v = RetrievalEvaluator(
                        store.qrels(args.split),
                        ev.query_ids,
                        ev.corpus_ids,
                        input_dim=width,
                        **{option: value},
                    )
                    add(ev_v.evaluate(rep, q, c, [dim], [precision])[0], budget, rep)
            if args.opq and rep == "concat" and budget >= 48:
                opq = OPQProductQuantizer(8 * budget).fit(corpus)
                add(opq.evaluate(ev, queries, corpus), budget, rep)
            elif reference and rep == "concat":
                for row in reference:
                    if row["method"] == "opq-pq" and row["bits"] == 8 * budget:
                        add(dict(row, scoring=row["scoring"] + " (--reference)"), budget, rep)
            # ---- the new codes
            specs: list[tuple[str, dict[str, Any]]] = []
            if rep == "concat":
                # ITQ on the concatenation would be faiss ITQ{8B}: its own PCA then ITQ, the "pca" row again.
                for name in ("rabitq", "rabitq2", "rabitq4"):
                    d = dim_for_budget(make_code(name), budget, width)
                    if d is not None:
                        specs.append((name, {"out_dim": d} if d < width else {}))
            else:
                specs.append(("itq", {}))
                specs += [(name, {}) for name in ("rabitq", "rabitq2", "rabitq4")]
            specs += [(n, {}) for n in ("sq8-quantiles", "sq8-optim", "sq4-quantiles", "sq4-optim")]
            for name, params in specs:
                code = make_code(name, **params)
                dim = width if "out_dim" in params else dim_for_budget(code, budget, width)
                if dim is None or code.bytes_for_dim(dim) > budget:
                    continue
                add(evaluate_code(ev, code, rep, q, c, dim), budget, rep)
                if name in ("itq", "rabitq") and budget <= 24:
                    code = make_code(name, rescore=200, **params)
                    add(evaluate_code(ev, code, rep, q, c, dim), budget, rep)
            if budget == 48 and rep == "pca":
                # The defaults' evidence: query bits and centring for RaBitQ, the clipped fraction for SQ.
                for name, params in (
                    ("rabitq", {"qb": 0}),
                    ("rabitq", {"qb": 4}),
                    ("rabitq", {"qb": 4, "centered": True}),
                    ("rabitq4", {"qb": 4}),
                    ("sq4-quantiles", {"rangestat_arg": 0.0001}),
                    ("sq4-quantiles", {"rangestat_arg": 0.01}),
                    ("sq4-optim", {"scoring": "symmetric"}),
                    ("itq", {"max_iter": 50}),
                ):
                    code = make_code(name, **params)
                    add(evaluate_code(ev, code, rep, q, c, dim_for_budget(code, budget, width)), budget, rep)
            if args.no_additive:
                continue
            if budget >= 48 and rep == "pca":
                additive(q, c, budget)
            elif budget >= 48 and args.rq_concat:
                add(evaluate_code(ev, make_code("rq", m=budget), rep, q, c), budget, rep)
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = [{k: v for k, v in r.items() if k not in ("per_query", "query_ids")} for r in rows]
    (out / "rivals.json").write_text(json.dumps(keep, indent=1))
    table = markdown(rows, width)
    (out / "rivals.md").write_text(table)
    print(table)


def markdown(rows: list[dict[str, Any]], width: int) -> str:
    """One table, budgets descending, rows by nDCG@10; each row's paired difference against the best row of
    the grid's existing precisions at that budget (binary / int8 / int4 / OPQ+PQ)."""
    lines = [
        "| budget | CF | rep | code | dim | bytes | extra bytes | scoring | nDCG@10 ± SE | vs best existing | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for budget in sorted({r["budget"] for r in rows}, reverse=True):
        group = sorted((r for r in rows if r["budget"] == budget), key=lambda r: -r["ndcg@10"])
        best = max(r["ndcg@10"] for r in group if r["extra_bytes"] == 0)
        existing = [r for r in group if r["precision"] in EXISTING]
        anchor = existing[0] if existing else None
        for r in group:
            score = f"{r['ndcg@10']:.3f} ± {r['ndcg@10_se']:.3f}"
            if r["ndcg@10"] == best and r["extra_bytes"] == 0:
                score = f"**{score}**"
            if anchor is None or r is anchor:
                versus = "(best existing)" if r is anchor else ""
            else:
                diff, se = paired_difference(r, anchor)
                versus = f"{diff:+.3f} ± {se:.3f}"
            lines.append(
                f"| {budget} | {32 * width / (8 * r['bytes']):.0f}× | {r['rep']} | {r['precision']} | {r['dim']} | "
                f"{r['bytes']} | {r['extra_bytes'] or ''} | {r['scoring']} | {score} | {versus} | "
                f"{r.get('fit_s', '')} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
