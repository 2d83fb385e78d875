"""Benchmark: faiss vs torch exact inner-product search, and the automatic backend rule refitted from it.

The evaluator searches the corpus in chunks of at most ``CHUNK_ROWS`` rows (smec/evaluation/evaluator.py), so
one search call never sees more rows than that, whatever the corpus: this times both backends on corpora of
``--rows`` rows (default: 2k to a full chunk) at each dim of ``--dims``, prints the table (the README's
evaluation section quotes it), the rule that the measurement implies (the narrowest dim from which torch is
faster at every size, the smallest size from which it is faster at every dim), and checks the rule shipped in smec/evaluation/search.py (``TORCH_MIN_DIM``, ``TORCH_MIN_CORPUS``):
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
from smec.evaluation.search import TORCH_MIN_CORPUS, TORCH_MIN_DIM, choose_backend, search_inner_product


def best_time(queries: np.ndarray, corpus: np.ndarray, backend: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        search_inner_product(queries, corpus, 100, backend=backend)
        times.append(time.perf_counter() - start)
    return min(times)


def fit_rule(table: dict[tuple[int, int], dict[str, float]]) -> tuple[int | None, int | None]:
    """(narrowest dim from which torch wins at every size, smallest size from which it wins at every dim)."""
    dims = sorted({d for d, _ in table})
    sizes = sorted({n for _, n in table})

    def torch_wins(d: int, n: int) -> bool:
        return table[d, n]["torch"] < table[d, n]["faiss"]

    min_dim = next((d for d in dims if all(torch_wins(e, n) for e in dims if e >= d for n in sizes)), None)
    min_rows = next((n for n in sizes if all(torch_wins(d, m) for d in dims for m in sizes if m >= n)), None)
    return min_dim, min_rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dims", type=int, nargs="+", default=[32, 48, 64, 96, 128, 256, 384])
    p.add_argument("--rows", type=int, nargs="+", default=[2_048, 8_192, 16_384, CHUNK_ROWS])
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
    min_dim, min_rows = fit_rule(table)
    print(f"shipped rule: torch from {TORCH_MIN_DIM} dims or from {TORCH_MIN_CORPUS:,} rows, else faiss")
    print(f"measured rule: TORCH_MIN_DIM = {min_dim}, TORCH_MIN_CORPUS = {min_rows} (None: torch never wins)")
    print("shipped rule OK" if ok else f"shipped rule MISSED (more than {args.slack:g}x slower somewhere)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
