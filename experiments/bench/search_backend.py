"""Benchmark: faiss vs torch exact inner-product search, and the automatic backend rule refitted from it.

The evaluator searches the corpus in chunks of at most ``CHUNK_ROWS`` rows (smec/evaluation/evaluator.py), so
one search call never sees more rows than that, whatever the corpus: this times both backends on corpora of
``--rows`` rows (default: 16k and a full chunk) at each dim of ``--dims``, prints the table (the README's
evaluation section quotes it), the rule that the measurement implies (dims from which torch is faster on a
full chunk), and checks the rule shipped in smec/evaluation/search.py (``TORCH_DIMS``, ``TORCH_MIN_CORPUS``):
exit status 1 when it picks a backend more than ``--slack`` (1.2x) slower than the other at any measured point,
with the refitted values to paste.

    python experiments/bench/search_backend.py [--queries 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from smec.evaluation.evaluator import CHUNK_ROWS
from smec.evaluation.search import TORCH_DIMS, TORCH_MIN_CORPUS, choose_backend, search_inner_product


def best_time(queries: np.ndarray, corpus: np.ndarray, backend: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        search_inner_product(queries, corpus, 100, backend=backend)
        times.append(time.perf_counter() - start)
    return min(times)


def fit_rule(table: dict[tuple[int, int], dict[str, float]], rows: int) -> tuple[int, int] | None:
    """The widest contiguous dim range where torch beats faiss on ``rows`` rows (None: nowhere)."""
    dims = sorted(d for d, n in table if n == rows)
    torch_dims = [d for d in dims if table[d, rows]["torch"] < table[d, rows]["faiss"]]
    if not torch_dims:
        return None
    lo = torch_dims[0]
    hi_candidates = [d for d in dims if d > torch_dims[-1]]
    return lo, hi_candidates[0] if hi_candidates else torch_dims[-1] + 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[32, 48, 64, 96, 128, 256, 384])
    p.add_argument("--rows", type=int, nargs="+", default=[16_384, CHUNK_ROWS])
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--slack", type=float, default=1.2)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    table: dict[tuple[int, int], dict[str, float]] = {}
    print(f"search_backend: exact top-100, {args.queries} queries, best of {args.repeat}")
    print(f"{'rows':>8} {'dim':>5} {'faiss s':>8} {'torch s':>8}  faster  auto")
    ok = True
    for rows in args.rows:
        for dim in args.dims:
            corpus = rng.standard_normal((rows, dim)).astype(np.float32)
            queries = rng.standard_normal((args.queries, dim)).astype(np.float32)
            t = {b: best_time(queries, corpus, b, args.repeat) for b in ("faiss", "torch")}
            table[dim, rows] = t
            faster = min(t, key=t.get)
            auto = choose_backend(dim, rows)
            bad = t[auto] > args.slack * t[faster]
            ok &= not bad
            print(
                f"{rows:>8} {dim:>5} {t['faiss']:8.3f} {t['torch']:8.3f}  {faster:<6}  {auto}"
                + ("  <- auto is slow" if bad else ""),
                flush=True,
            )
    rule = fit_rule(table, max(args.rows))
    print(f"shipped rule: torch for {TORCH_DIMS[0]} <= dim < {TORCH_DIMS[1]} on >= {TORCH_MIN_CORPUS:,} rows")
    print(
        "measured rule: "
        + ("faiss at every dim" if rule is None else f"TORCH_DIMS = {rule} on a {max(args.rows):,}-row chunk")
    )
    print("shipped rule OK" if ok else f"shipped rule MISSED (more than {args.slack:g}x slower somewhere)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
