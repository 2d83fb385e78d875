"""`smec eval`: the nDCG@10 grid (method × dim × precision) for a store.

On a store of frozen base-model embeddings (from `smec embed`) it runs the training-free baselines: each base
model alone, the naive concatenation (truncated and full), PCA of the concatenation, a random rotation (binary),
and OPQ + PQ at the int8 budget of each dim. On a store of compressed embeddings (from `smec predict`) it evaluates
each compressed model at its nested prefixes. Writes results.json, results.md and TREC run files to --out.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smec.commands import at_least

if TYPE_CHECKING:
    from datamodules.store.reader import EmbeddingStore
    from smec.evaluation.evaluator import RetrievalEvaluator

DEFAULT_DIMS = (32, 64, 128, 256)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="store folder (from `smec embed` or `smec predict`)")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check each shard's sha256 when it is opened (for very large stores; the rows read are "
        "still scanned for NaN/Inf). Also: SMEC_VERIFY_STORE=0",
    )
    parser.add_argument(
        "--models", nargs="+", default=None, help="base models to concatenate (default: all, store order)"
    )
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: %(default)s)")
    parser.add_argument(
        "--dims",
        nargs="+",
        type=int,
        default=None,
        help="dims to evaluate, each at most the input's width; each representation's full width is added "
        f"(default: {' '.join(map(str, DEFAULT_DIMS))}, those wider than the input left out)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        help="float32 int8 int4 binary (default: all; binary only at dims that are multiples of 8)",
    )
    parser.add_argument("--out", required=True, help="output folder for results.json, results.md, runs/")
    parser.add_argument("--no-pq", action="store_true", help="skip the OPQ + PQ baseline (the slowest)")
    parser.add_argument(
        "--pq-max-bits",
        type=at_least(8),
        default=1024,
        help="largest OPQ + PQ code budget to train (default: %(default)s)",
    )
    parser.add_argument("--no-trec", action="store_true", help="do not write TREC run files")
    parser.add_argument(
        "--fit-sample", type=at_least(1), default=10_000, help="corpus rows that fit PCA / OPQ / quantizers"
    )
    parser.add_argument(
        "--int-scoring",
        default="symmetric",
        choices=["symmetric", "asymmetric"],
        help="int8/int4: quantise queries too (symmetric, default) or score float queries against codes",
    )


def store_evaluator(
    store: EmbeddingStore, split: str, input_dim: int, fit_sample: int, int_scoring: str
) -> RetrievalEvaluator:
    """The one evaluator configuration for baselines and trained systems, so their rows compare like for like."""
    from smec.evaluation.evaluator import RetrievalEvaluator

    return RetrievalEvaluator(
        store.qrels(split),
        store.ids(f"queries/{split}"),
        store.ids("corpus"),
        input_dim=input_dim,
        calibration_size=fit_sample,
        int_scoring=int_scoring,
    )


def baseline_rows(
    store: EmbeddingStore,
    keys: Sequence[str],
    split: str,
    dims: Sequence[int],
    precisions: Sequence[str],
    *,
    fit_sample: int = 10_000,
    int_scoring: str = "symmetric",
    pq: bool = True,
    pq_max_bits: int | None = 1024,
    run_dir: Path | None = None,
    single_only: Sequence[str] = (),
    dropped: list[str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The training-free grid (``run_baselines``) on the L2-concatenation of ``keys`` in a raw store.

    ``single_only``: more models evaluated alone (``model:<key>`` rows) but not concatenated. Returns
    ``(rows, input_dim)``, input_dim being the concatenation's width.
    """
    from datamodules.store.combine import combine
    from smec.evaluation.baselines import run_baselines

    q_by = {k: store.array(k, f"queries/{split}").read() for k in [*keys, *single_only]}
    c_by = {k: store.array(k, "corpus").read() for k in [*keys, *single_only]}
    cq, cc = combine([q_by[k] for k in keys]), combine([c_by[k] for k in keys])
    rows = run_baselines(
        store_evaluator(store, split, cc.shape[1], fit_sample, int_scoring),
        {k: combine([v], "l2-concat") for k, v in q_by.items()},
        {k: combine([v], "l2-concat") for k, v in c_by.items()},
        cq,
        cc,
        dims,
        precisions,
        fit_sample_size=fit_sample,
        pq=pq,
        pq_max_bits=pq_max_bits,
        run_dir=run_dir,
        dropped=dropped,
    )
    return rows, int(cc.shape[1])


def grid_dims(requested: Sequence[int] | None, width: int, what: str, dropped: list[str]) -> list[int]:
    """The dims to evaluate for a representation ``width`` wide, plus its full width.

    Explicit ``--dims`` wider than the input are an error; the default dims are an automatic grid, so those
    wider than the input are left out (noted in ``dropped``).
    """
    from smec.evaluation.errors import EvaluationError

    dims = sorted(set(requested if requested is not None else DEFAULT_DIMS))
    wide = [d for d in dims if d > width]
    if wide and requested is not None:
        raise EvaluationError(f"--dims {wide}: wider than the input ({what} has {width} dims)")
    if wide:
        dropped.append(f"default dims {wide} (wider than the input: {what} has {width} dims)")
    return [d for d in dims if d <= width]


def run(args: argparse.Namespace) -> int:
    import time

    from datamodules.paths import check_output_dir
    from datamodules.store.reader import EmbeddingStore
    from smec.errors import ConfigError
    from smec.evaluation.baselines import evaluate_grid, warn_dropped
    from smec.evaluation.errors import EvaluationError
    from smec.evaluation.quantize import PRECISIONS, check_precision
    from smec.evaluation.results import markdown_table, write_results

    precisions = list(args.precisions) if args.precisions is not None else list(PRECISIONS)
    for p in precisions:
        check_precision(p)
    if any(d < 1 for d in args.dims or ()):
        raise EvaluationError(f"--dims: expected positive integers, got {args.dims}")
    if args.dims is not None and args.precisions is not None and "binary" in precisions:
        odd = [d for d in args.dims if d % 8]
        if odd:
            raise EvaluationError(
                f"--dims {odd} with --precisions binary: binary codes need a multiple of 8 dims"
            )
    # Before any work: an output we cannot write is found now, not after the grid.
    out = check_output_dir(args.out, "--out", ConfigError)
    store = EmbeddingStore(args.store, verify=False if args.no_verify else None)
    run_dir = None if args.no_trec else out / "runs"
    split = args.split
    infos = {k: store.meta["models"][k]["model"] for k in store.models}
    unknown = [k for k in args.models or () if k not in infos]
    if unknown:
        raise EvaluationError(f"--models {unknown}: not in {store.path} (it holds {sorted(infos)})")
    compressed = [k for k, info in infos.items() if info.get("kind") == "compressed"]
    dropped: list[str] = []

    start = time.perf_counter()
    if compressed:
        keys = args.models or compressed
        rows = []
        input_dim = None
        for key in keys:
            # Compression factors are relative to the float32 input the model compressed, not its own width.
            input_dim = int(infos[key].get("input_dim") or store.model_dim(key))
            width = store.model_dim(key)
            dims = grid_dims(args.dims, width, key, dropped)
            rows += evaluate_grid(
                store_evaluator(store, split, input_dim, args.fit_sample, args.int_scoring),
                key,
                store.array(key, f"queries/{split}").read(),
                store.array(key, "corpus").read(),
                [d for d in dims if d < width] + [width],
                precisions,
                run_dir=run_dir,
                dropped=dropped,
            )
        base_models = list(dict.fromkeys(m for k in keys for m in infos[k].get("source_models", [])))
        reference = None
    else:
        keys = args.models or store.models
        if not keys:
            raise EvaluationError(f"{store.path}: the store holds no finished models")
        width = sum(store.model_dim(k) for k in keys)
        rows, input_dim = baseline_rows(
            store,
            keys,
            split,
            grid_dims(args.dims, width, f"the concatenation of {', '.join(keys)}", dropped),
            precisions,
            fit_sample=args.fit_sample,
            int_scoring=args.int_scoring,
            pq=not args.no_pq,
            pq_max_bits=args.pq_max_bits,
            run_dir=run_dir,
            dropped=dropped,
        )
        base_models = list(keys)
        reference = ("concat", input_dim, "float32") if "float32" in precisions else None
    warn_dropped(dropped)
    seconds = time.perf_counter() - start
    path = write_results(
        out,
        rows,
        dataset=store.dataset,
        split=split,
        base_models=base_models,
        input_dim=int(input_dim),
        metadata={"store": str(store.path), "seconds": round(seconds, 1), "int_scoring": args.int_scoring},
    )
    table = markdown_table(rows, reference=reference)
    (out / "results.md").write_text(
        f"# {store.dataset} / {split}: {', '.join(base_models)} (input {input_dim}-d)\n\n{table}\n"
    )
    print(table)
    print(
        f"\n{len(rows)} rows in {seconds:.0f} s -> {path}, {out / 'results.md'}"
        + ("" if args.no_trec else f", {run_dir}/")
    )
    return 0
