"""Does a DDP fit match a one-process fit? Dev nDCG@10 of MRL and SMEC, 1 vs N CPU processes, over seeds.

Builds (once) a synthetic store with structure — documents drawn around latent topics, seen through three
"models" (random linear maps of the latent plus per-model noise), queries near one relevant document — small
enough that a fit takes seconds on a laptop CPU, then runs ``smec fit`` with the recipes (configs/mrl.yaml,
configs/smec.yaml, shortened budgets) for every method x seed x process count and prints, per method and process
count, the best dev ``val/ndcg@10/mean`` (the checkpoint monitor) as mean ± std over seeds.

    python experiments/ddp_parity.py --out runs/ddp-parity [--seeds 0 1 2] [--procs 1 2] [--methods mrl smec]
        [--extra=--data.init_args.batch_scope=rank] [--tag=-rank]

A process count above 1 adds ``--config configs/trainer/ddp.yaml --trainer.devices N --trainer.accelerator cpu``
(``--ddp-args`` replaces that, e.g. to run code without the profile).
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"a": 64, "b": 48, "c": 32}
METHODS = {
    "mrl": [
        "--config=configs/mrl.yaml",
        "--model.init_args.output_dim=64",
        "--model.init_args.dims=[8, 16, 32, 64]",
        "--trainer.max_epochs=12",
    ],
    "smec": [
        "--config=configs/smec.yaml",
        "--model.init_args.dims=[64, 32, 16, 8]",
        "--model.init_args.smrl.epochs_per_stage=3",
        "--model.init_args.sxbm.memory_size=1024",
        "--trainer.min_epochs=12",
        "--trainer.max_epochs=12",
    ],
}


def build_synthetic_store(path: Path, n_corpus: int = 4000, seed: int = 0) -> Path:
    """Documents around 100 latent topics in 48 dims, three noisy linear views; query i is relevant to one doc."""
    from datamodules.store.writer import StoreWriter, TextSetSpec

    if (path / "store.json").exists():
        return path
    rng = np.random.default_rng(seed)
    latent, topics = 48, 100
    centers = rng.standard_normal((topics, latent)) * 2.0
    docs = centers[rng.integers(0, topics, n_corpus)] + rng.standard_normal((n_corpus, latent))
    splits = {"train": 1000, "dev": 300, "test": 300}
    texts = {"corpus": docs}
    ids = {"corpus": [f"d{i}" for i in range(n_corpus)]}
    qrels = {}
    for split, n in splits.items():
        target = rng.integers(0, n_corpus, n)
        texts[f"queries/{split}"] = docs[target] + 1.5 * rng.standard_normal((n, latent))
        ids[f"queries/{split}"] = [f"{split}-q{i}" for i in range(n)]
        qrels[split] = {f"{split}-q{i}": {f"d{t}": 1} for i, t in enumerate(target)}
    writer = StoreWriter(
        path,
        dataset="synthetic-topics",
        fingerprint=f"synthetic-topics-{n_corpus}-{seed}",
        text_sets=[TextSetSpec(k, v) for k, v in ids.items()],
        qrels=qrels,
    )
    for model, dim in MODELS.items():
        view = rng.standard_normal((latent, dim)) / np.sqrt(latent)
        for text_set, z in texts.items():
            data = (z @ view + 0.5 * rng.standard_normal((len(z), dim))).astype(np.float32)
            writer.write(
                model, text_set, dim=dim, encode=lambda s, e, d=data: d[s:e], model_info={"spec": model}
            )
    return path


def best_dev(run_dir: Path) -> float:
    values = []
    for metrics in run_dir.glob("csv/*/metrics.csv"):
        with metrics.open() as f:
            values += [float(r["val/ndcg@10/mean"]) for r in csv.DictReader(f) if r.get("val/ndcg@10/mean")]
    if not values:
        raise SystemExit(f"{run_dir}: no val/ndcg@10/mean logged (see {run_dir}/fit.log)")
    return max(values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/ddp-parity"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--extra", default="", help="more `smec fit` arguments for every run (shell-quoted)")
    p.add_argument("--ddp-args", default=None, help="replaces the DDP arguments ({n}: the process count)")
    p.add_argument("--tag", default="", help="suffix of the run folders (to keep variants apart)")
    args = p.parse_args(argv)

    store = build_synthetic_store(args.out / "store")
    results: dict[tuple[str, int], list[float]] = {}
    for method in args.methods:
        for n in args.procs:
            for seed in args.seeds:
                run_dir = args.out / f"{method}-p{n}-s{seed}{args.tag}"
                ddp = []
                if n > 1:
                    spec = args.ddp_args or "--config=configs/trainer/ddp.yaml --trainer.devices={n}"
                    ddp = [*shlex.split(spec.format(n=n)), "--trainer.accelerator=cpu"]
                cmd = [
                    sys.executable,
                    "-m",
                    "smec.cli",
                    "fit",
                    *METHODS[method],
                    *ddp,
                    f"--seed_everything={seed}",
                    f"--data.init_args.seed={seed}",  # init, ADS draws and data order, as `smec compare` seeds
                    f"--data.init_args.store={store}",
                    "--data.init_args.models=[a, b, c]",
                    f"--trainer.default_root_dir={run_dir}",
                    "--trainer.enable_progress_bar=false",
                    *shlex.split(args.extra),
                ]
                if not any(run_dir.glob("csv/*/metrics.csv")):
                    run_dir.mkdir(parents=True, exist_ok=True)
                    start = time.time()
                    with (run_dir / "fit.log").open("w") as log:
                        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
                        rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
                    if rc != 0:
                        raise SystemExit(f"{run_dir}: smec fit exited {rc} (see {run_dir}/fit.log)")
                    print(f"{run_dir.name}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)
                results.setdefault((method, n), []).append(best_dev(run_dir))
    print("| method | processes | best dev nDCG@10 (mean over sizes), mean ± std | seeds |")
    print("|---|---|---|---|")
    for (method, n), values in results.items():
        v = np.asarray(values)
        print(
            f"| {method} | {n} | {v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f} | "
            f"{', '.join(f'{x:.4f}' for x in v)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
