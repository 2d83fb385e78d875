"""`smec eval`: the nDCG@10 grid (method × dim × precision) for a store.

On a store of frozen base-model embeddings (from `smec embed`) it runs the training-free baselines: each base
model alone, the naive concatenation (truncated and full), PCA of the concatenation, a random rotation (binary),
and OPQ + PQ at the int8 budget of each dim. On a store of compressed embeddings (from `smec predict`) it evaluates
each compressed model at its nested prefixes (a model of a system whose sizes are not prefixes, recorded with
``prefix_nested: false``, at its width only). Writes results.json, results.md and TREC run files to --out.

The options are fields of :class:`smec.evaluation.spec.EvaluationSpec`, with its defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smec.commands import at_least
from smec.evaluation.spec import AUTO_DIMS, INT_SCORINGS, EvaluationSpec

if TYPE_CHECKING:
    from datamodules.store.reader import EmbeddingStore


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
        default=EvaluationSpec.dims,
        help="dims to evaluate, each at most the input's width; each representation's full width is added "
        f"(default: {' '.join(map(str, AUTO_DIMS))}, those wider than the input left out)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        help=f"{' '.join(EvaluationSpec.precisions)} (default: all; binary only at dims that are multiples of 8)",
    )
    parser.add_argument("--out", required=True, help="output folder for results.json, results.md, runs/")
    parser.add_argument("--no-pq", action="store_true", help="skip the OPQ + PQ baseline (the slowest)")
    parser.add_argument(
        "--pq-max-bits",
        type=at_least(8),
        default=EvaluationSpec.pq_max_bits,
        help="largest OPQ + PQ code budget to train (default: %(default)s)",
    )
    parser.add_argument("--no-trec", action="store_true", help="do not write TREC run files")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress line per grid point (on stderr)"
    )
    parser.add_argument(
        "--fit-sample",
        type=at_least(1),
        default=EvaluationSpec.calibration_size,
        help="corpus rows that fit PCA / OPQ / quantizers (default: %(default)s)",
    )
    parser.add_argument(
        "--codes",
        nargs="+",
        default=None,
        metavar="CODE",
        help="code rivals on top of each representation, with their default settings, at the grid's budgets "
        "of >= 24x compression: itq, rabitq, rabitq2, rabitq4, sq8-quantiles, sq4-quantiles, ... "
        "(smec/evaluation/codes; default: none)",
    )
    parser.add_argument(
        "--int-scoring",
        default=EvaluationSpec.int_scoring,
        choices=list(INT_SCORINGS),
        help="int8/int4: quantise queries too (symmetric, default) or score float queries against codes",
    )


def spec_from_args(args: argparse.Namespace) -> EvaluationSpec:
    """The evaluation spec the options describe; bad values are one EvaluationError naming the option."""
    from smec.evaluation.errors import EvaluationError
    from smec.evaluation.quantize import check_precision

    precisions = tuple(args.precisions) if args.precisions is not None else EvaluationSpec.precisions
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
    return EvaluationSpec(
        dims=None if args.dims is None else tuple(sorted(set(args.dims))),
        precisions=tuple(dict.fromkeys(precisions)),
        calibration_size=args.fit_sample,
        int_scoring=args.int_scoring,
        pq=not args.no_pq,
        pq_max_bits=args.pq_max_bits,
        codes=tuple({"name": name} for name in dict.fromkeys(args.codes or ())),
    )


def _store_rows(
    store: EmbeddingStore, models: list[str] | None, split: str, spec: EvaluationSpec, run_dir: Path | None
) -> tuple[list[dict[str, Any]], int, list[str], tuple[str, int, str] | None]:
    """(rows, input_dim, base models, markdown reference) of the store: compressed models, else the baselines."""
    from smec.evaluation.errors import EvaluationError
    from smec.evaluation.grid import warn_dropped
    from smec.evaluation.store_grid import baseline_rows, compressed_rows, source_models

    infos = {k: store.meta["models"][k]["model"] for k in store.models}
    unknown = [k for k in models or () if k not in infos]
    if unknown:
        raise EvaluationError(f"--models {unknown}: not in {store.path} (it holds {sorted(infos)})")
    compressed = [k for k, info in infos.items() if info.get("kind") == "compressed"]
    dropped: list[str] = []
    if compressed:
        keys = models or compressed
        rows, input_dim = compressed_rows(store, keys, split, spec, run_dir=run_dir, dropped=dropped)
        warn_dropped(dropped)
        return rows, input_dim, source_models(infos, keys), None
    keys = models or store.models
    if not keys:
        raise EvaluationError(f"{store.path}: the store holds no finished models")
    rows, input_dim = baseline_rows(store, keys, split, spec, run_dir=run_dir, dropped=dropped)
    warn_dropped(dropped)
    reference = ("concat", input_dim, "float32") if "float32" in spec.precisions else None
    return rows, input_dim, list(keys), reference


def progress_line(start: float):
    """A callback printing one stderr line per scored grid point: its metric, its time and the time so far."""
    import sys
    import time

    count = [0]

    def line(row: dict[str, Any]) -> None:
        count[0] += 1
        ndcg = next(k for k in row if k.startswith("ndcg@") and not k.endswith("_se"))
        print(
            f"[eval {count[0]:>3}] {row['method']} {row['dim']}-d {row['precision']}: "
            f"{ndcg} {row[ndcg]:.4f} in {row['time_s']:.1f} s "
            f"({time.perf_counter() - start:.0f} s so far)",
            file=sys.stderr,
            flush=True,
        )

    return line


def run(args: argparse.Namespace) -> int:
    import time

    from datamodules.paths import check_output_dir
    from datamodules.store.reader import EmbeddingStore
    from smec.errors import ConfigError
    from smec.evaluation.evaluator import report_progress
    from smec.evaluation.results import markdown_table, write_results

    spec = spec_from_args(args)
    # Before any work: an output we cannot write is found now, not after the grid.
    out = check_output_dir(args.out, "--out", ConfigError)
    store = EmbeddingStore(args.store, verify=False if args.no_verify else None)
    run_dir = None if args.no_trec else out / "runs"
    start = time.perf_counter()
    with report_progress(None if args.no_progress else progress_line(start)):
        rows, input_dim, base_models, reference = _store_rows(store, args.models, args.split, spec, run_dir)
    seconds = time.perf_counter() - start
    path = write_results(
        out,
        rows,
        dataset=store.dataset,
        split=args.split,
        base_models=base_models,
        input_dim=int(input_dim),
        metadata={"store": str(store.path), "seconds": round(seconds, 1), "evaluation": spec.to_dict()},
    )
    table = markdown_table(rows, reference=reference)
    (out / "results.md").write_text(
        f"# {store.dataset} / {args.split}: {', '.join(base_models)} (input {input_dim}-d)\n\n{table}\n"
    )
    print(table)
    print(
        f"\n{len(rows)} rows in {seconds:.0f} s -> {path}, {out / 'results.md'}"
        + ("" if args.no_trec else f", {run_dir}/")
    )
    return 0
