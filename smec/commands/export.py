"""`smec export`: a trained checkpoint -> a sentence-transformers folder (base encoders + compressor + quantizer).

``SentenceTransformer(DIR, trust_remote_code=True).encode_query(texts)`` then gives the vectors (float32) or
codes (int8 / int4 / binary) that `smec predict` + `smec eval` produce for those texts. See smec/export/.
"""

from __future__ import annotations

import argparse

from smec.evaluation.spec import BINARY_THRESHOLDS, PRECISIONS, EvaluationSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint of a trained system (`smec fit`)")
    parser.add_argument("--out", required=True, help="folder to write (must not exist, unless --overwrite)")
    parser.add_argument("--dim", type=int, default=None, help="size to export (default: the largest trained)")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=list(PRECISIONS),
        help="float32 vectors or corpus-calibrated codes (default: %(default)s)",
    )
    parser.add_argument(
        "--store", default=None, help="embedding store it was trained on (default: from the checkpoint)"
    )
    parser.add_argument(
        "--models", nargs="+", default=None, help="store models, in order (default: from the checkpoint)"
    )
    parser.add_argument(
        "--fit-sample",
        type=int,
        default=EvaluationSpec.calibration_size,
        help="corpus rows that fit the quantizer, as `smec eval --fit-sample` (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=EvaluationSpec.seed, help="seed of that sample (default: %(default)s)"
    )
    parser.add_argument(
        "--binary-threshold",
        default=EvaluationSpec.binary_threshold,
        choices=list(BINARY_THRESHOLDS),
        help="binary: per-dim threshold (default: %(default)s)",
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows per compressor call (default: the checkpoint's data batch size, as `smec predict`)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="the data the store was embedded from, to check the base models still reproduce it "
        "(default: the store's dataset when it is built in)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip that check")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing exported model in --out"
    )


def run(args: argparse.Namespace) -> int:
    from smec.export.writer import export_model

    record = export_model(
        args.ckpt,
        args.out,
        dim=args.dim,
        precision=args.precision,
        store=args.store,
        models=args.models,
        fit_sample=args.fit_sample,
        seed=args.seed,
        binary_threshold=args.binary_threshold,
        chunk_rows=args.chunk_rows,
        dataset=args.dataset,
        check=not args.no_check,
        overwrite=args.overwrite,
    )
    trained = (
        "" if record["dim"] in record["trained_dims"] else f" (not a trained size: {record['trained_dims']})"
    )
    if record["check"]:
        c = record["check"]
        print(
            f"checked: the base models reproduce the store on {c['texts']} texts (max abs diff {c['max_abs_diff']:.2g})"
        )
    print(
        f"exported {record['method']} {record['precision']}@{record['dim']}{trained} of "
        f"{' + '.join(record['base_models'])} ({record['input_dim']}-d, {record['compression']:.3g}x) -> {args.out}\n"
        f"load: SentenceTransformer({args.out!r}, trust_remote_code=True)"
    )
    return 0
