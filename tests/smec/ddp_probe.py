"""A callback that records, on every DDP rank, what each training step saw, for tests/smec/test_ddp_fit.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class DDPProbe(Callback):
    """Per step: epoch, the rows of the batch, a hash of the global torch RNG state (ADS draws its Gumbel noise
    from it); at the end: the module's state_dict. Saved as ``<out>/rank<r>.pt``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        rng = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()
        rows = {key: value.detach().cpu().clone() for key, value in batch.items()}
        self.steps.append({"epoch": trainer.current_epoch, "rng": rng, "rows": rows})

    def on_train_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        state = {key: value.detach().cpu().clone() for key, value in pl_module.state_dict().items()}
        torch.save(
            {
                "rank": trainer.global_rank,
                "world": trainer.world_size,
                "global_step": trainer.global_step,
                "steps": self.steps,
                "state": state,
            },
            self.out / f"rank{trainer.global_rank}.pt",
        )
