"""Benchmark: `smec fit`'s training loop vs a bare PyTorch loop doing the same maths on the same streamed data.

Goal (issue: MRL system): Lightning samples/s >= 0.90 x the bare loop. Both run in this process on the same
store, model, loss, optimizer and batches (EmbeddingDataModule -> on_after_batch_transfer -> decoder ->
Matryoshka loss -> AdamW), without validation, logging or checkpoints; each is repeated and the best run is kept.
Both are timed from the first batch to the end of the last epoch (set-up excluded on both sides). Exit status 1
when the goal is missed.

    python experiments/bench/fit_throughput.py --store stores/wordnet-demo [--epochs 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time

import lightning as L
import torch

from datamodules.embedding import EmbeddingDataModule
from smec.systems.mrl import MRLDecoderModule


def make(args) -> tuple[EmbeddingDataModule, MRLDecoderModule]:
    torch.manual_seed(0)
    dm = EmbeddingDataModule(args.store, models=args.models, batch_size=args.batch_size)
    model = MRLDecoderModule(input_dim=dm.input_dim, output_dim=512, dims=[32, 64, 128, 256, 512])
    return dm, model


def bare(args) -> float:
    dm, model = make(args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loader = dm.train_dataloader()
    model.train()
    n, start = 0, time.perf_counter()
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            x = dm.on_after_batch_transfer(batch, 0)["x"]
            loss = model.loss_fn(model.decoder(x), x).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(x)
    return n / (time.perf_counter() - start)


class _Clock(L.Callback):
    """Times the training loop itself (first batch to last), as the bare loop is timed, excluding set-up."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start


def lightning(args) -> float:
    dm, model = make(args)
    clock = _Clock()
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[clock],
    )
    trainer.fit(model, datamodule=dm)
    return trainer.global_step * args.batch_size / clock.seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="stores/wordnet-demo")
    p.add_argument("--models", nargs="+", default=["minilm-l6", "paraphrase-l3", "e5-small-q4"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    results = {"bare": [], "lightning": []}
    for _ in range(args.repeat):  # interleaved so that background load hits both alike
        results["bare"].append(bare(args))
        results["lightning"].append(lightning(args))
    best = {k: max(v) for k, v in results.items()}
    ratio = best["lightning"] / best["bare"]
    print(f"store {args.store}, batch {args.batch_size}, {args.epochs} epochs, best of {args.repeat}")
    for k, v in results.items():
        print(f"  {k:<10} best {best[k]:>9,.0f} samples/s   runs: {', '.join(f'{x:,.0f}' for x in v)}")
    print(f"lightning / bare = {ratio:.2f} (goal >= 0.90): {'OK' if ratio >= 0.9 else 'MISSED'}")
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
