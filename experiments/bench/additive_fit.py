"""How long do the additive codes (RQ, LSQ) take to fit at the int8 budgets? Wall and CPU seconds per fit.

    python experiments/bench/additive_fit.py [--store stores/wordnet-demo] [--rows 10000] [--runs rq:48:1152 ...]

Each run is ``kind:M:dim``: ``AdditiveCode(kind, M)`` with its defaults (smec/evaluation/codes/additive.py)
fitted on ``--rows`` corpus rows of width ``dim`` (the PCA of the store's concatenation, or a seeded synthetic
low-rank sample without ``--store``), then encoding 2,000 rows. CPU seconds (all threads) are printed beside
wall seconds because this 2-core machine is usually shared: wall time then overstates a quiet machine's by the
load. Default runs: RQ at M = 48 and 96 on the full 1152-d input and on PCA-256; LSQ at M = 4 and 8 (its
training solves a (256 M)^2 linear system each round, so M = 48 is out of reach: ~(48/8)^3 = 216x the M = 8
solve).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from smec.evaluation.codes import AdditiveCode
from smec.evaluation.quantize import l2_normalize


def sample(store: str | None, rows: int, dim: int) -> np.ndarray:
    if store is None:
        rng = np.random.default_rng(0)
        basis = rng.standard_normal((128, 1152)).astype(np.float32)
        x = rng.standard_normal((rows, 128)).astype(np.float32) @ basis
        x += 0.3 * rng.standard_normal(x.shape).astype(np.float32)
    else:
        from datamodules.store.combine import combine
        from datamodules.store.reader import EmbeddingStore

        st = EmbeddingStore(store)
        x = combine([st.array(k, "corpus").read() for k in st.models])[:rows]
    x = l2_normalize(x)
    if dim < x.shape[1]:
        from smec.evaluation.baselines import PCA

        x = l2_normalize(PCA(dim).fit(x).transform(x))
    return x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default=None)
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument(
        "--runs",
        nargs="+",
        default=["rq:48:1152", "rq:96:1152", "rq:48:256", "rq:96:256", "lsq:4:1152", "lsq:8:1152"],
    )
    args = p.parse_args()
    for run in args.runs:
        kind, m, dim = run.split(":")
        x = sample(args.store, args.rows, int(dim))
        code = AdditiveCode(kind, int(m))
        wall, cpu = time.perf_counter(), time.process_time()
        code.fit(x)
        fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        codes = code.encode(x[:2000])
        enc_wall, enc_cpu = time.perf_counter() - wall, time.process_time() - cpu
        err = np.square(code.faiss_index.sa_decode(codes) - x[:2000]).sum(1).mean()
        print(
            f"{kind} M={m} d={dim} rows={len(x)} (trains on {min(len(x), code.max_train)}): fit {fit_wall:.1f} s wall / "
            f"{fit_cpu:.1f} s CPU; encode 2000 rows {enc_wall:.1f} s wall / {enc_cpu:.1f} s CPU; "
            f"reconstruction MSE {err:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
