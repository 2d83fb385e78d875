"""MRL (concat-decoder) vs PCA of the concatenation on the demo test split, over several seeds.

For each variant and seed: `smec fit` (checkpoint selected on dev nDCG@10), `smec predict` (compressed store),
`smec eval` (test split). Then, per (dim, precision), the mean ± std over seeds and the mean paired difference
to PCA (from a baseline results.json made by `smec eval` on the raw store) with its paired SE per seed.

    python experiments/mrl_vs_pca.py --seeds 0 1 2 --variants paper pca-init --out runs/mrl-vs-pca
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = {
    "paper": [],  # LN -> Linear, random (Kaiming) init: the paper's recipe with the pilot's best decoder form
    "pca-init": ["--model.init_args.init_from", "pca"],
}


def smec(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "smec.cli", *args], check=True, stdout=subprocess.DEVNULL)


def run_one(variant: str, seed: int, out: Path, recipe: str, extra: list[str]) -> Path:
    run = out / f"{variant}-s{seed}"
    results = run / "eval" / "results.json"
    if results.exists():
        return results
    # The seed sets both the init and the data order (a PCA-initialised decoder is otherwise deterministic).
    base = ["--config", recipe, "--config", "configs/trainer/cpu.yaml", "--seed_everything", str(seed)]
    base += ["--data.init_args.seed", str(seed)]
    base += ["--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false", *extra]
    smec("fit", *base, *VARIANTS[variant])
    best = sorted((run / "checkpoints").glob("best-*.ckpt"))[-1]
    smec(
        "predict",
        *base,
        *VARIANTS[variant],
        "--ckpt_path",
        str(best),
        "--trainer.logger",
        "false",
        "--trainer.callbacks+=smec.prediction.StorePredictionWriter",
        f"--trainer.callbacks.output_dir={run / 'predicted'}",
        "--trainer.callbacks.overwrite=true",
    )
    smec(
        "eval",
        "--store",
        str(run / "predicted"),
        "--out",
        str(run / "eval"),
        "--dims",
        "32",
        "64",
        "128",
        "256",
        "--precisions",
        "float32",
        "int8",
        "--no-trec",
    )
    return results


def main() -> int:
    from smec.evaluation.results import read_results
    from smec.evaluation.stats import paired_difference

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--recipe", default="configs/mrl.yaml")
    p.add_argument("--baselines", default="runs/demo-baselines/results.json")
    p.add_argument("--out", default="runs/mrl-vs-pca")
    p.add_argument("extra", nargs="*", help="more CLI overrides for every fit, after --")
    args = p.parse_args()
    base_rows, _ = read_results(Path(args.baselines))
    pca = {(r["dim"], r["precision"]): r for r in base_rows if r["method"] == "pca"}
    lines = [
        "| variant | dim | precision | nDCG@10 mean ± std (seeds) | PCA | MRL − PCA (mean of paired diffs; per-seed paired SE) |",
        "|---|---|---|---|---|---|",
    ]
    for variant in args.variants:
        per_seed = [
            read_results(run_one(variant, s, Path(args.out), args.recipe, args.extra))[0] for s in args.seeds
        ]
        for dim in (32, 64, 128, 256):
            for precision in ("float32", "int8"):
                rows = [
                    next(r for r in rs if r["dim"] == dim and r["precision"] == precision) for rs in per_seed
                ]
                values = np.array([r["ndcg@10"] for r in rows])
                diffs = [paired_difference(r, pca[(dim, precision)]) for r in rows]
                lines.append(
                    f"| {variant} | {dim} | {precision} | {values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f} "
                    f"({', '.join(f'{v:.3f}' for v in values)}) | {pca[(dim, precision)]['ndcg@10']:.3f} | "
                    f"{np.mean([d for d, _ in diffs]):+.4f} ({', '.join(f'±{se:.4f}' for _, se in diffs)}) |"
                )
    table = "\n".join(lines)
    print(table)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
