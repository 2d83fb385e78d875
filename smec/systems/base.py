"""What every compression system offers the evaluator callback, the predict writer and the CLI."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor, nn
from torchmetrics import MeanMetric

from smec import rng
from smec.errors import ConfigError

RNG_KEY = "smec_rng_states"
"""Checkpoint key of every rank's generator states (:func:`smec.rng.gather`)."""


class CompressionSystem(L.LightningModule):
    """What every compression system offers the evaluator, the predict writer and the CLI.

    Subclasses set ``self.output_dim`` and ``self.eval_dims`` and implement :meth:`compress`.
    """

    method_name = "compressor"
    # True when every nested size is a prefix (or an index set) of compress(x); SMEC's SMRL chain sets False.
    prefix_nested = True
    input_dim: int
    output_dim: int
    eval_dims: tuple[int, ...]

    def compress(self, x: Tensor) -> Tensor:
        """Frozen input (B, D) → compressed output (B, d_max), not normalised; nested sizes are prefixes."""
        raise NotImplementedError

    def embed(self, x: Tensor, dim: int) -> Tensor:
        """The representation of size ``dim`` (default: the prefix of :meth:`compress`)."""
        return self.compress(x)[:, :dim]

    def index_sets(self) -> dict[int, Tensor] | None:
        """Explicit coordinate sets per size when they are not prefixes (ADS); None for prefixes."""
        return None

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_dim = getattr(datamodule, "input_dim", None)
        if data_dim is not None and data_dim != self.input_dim:
            raise ConfigError(
                f"model.input_dim={self.input_dim} does not match the data: the store's models "
                f"{datamodule.model_keys} concatenate to {data_dim} dims (data.models / data.store)"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Every generator's state, so that a fit resumed from this checkpoint draws what the uninterrupted fit
        # draws (ADS's Gumbel noise, the loaders' base seeds). Called on every rank (a collective under DDP).
        checkpoint[RNG_KEY] = rng.gather()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Only when a fit resumes: loading weights (load_from_checkpoint, validate, predict) must not reset the
        # caller's generators. Nothing draws between here and the resumed fit's first draw (the sanity check
        # runs under isolate_rng and is skipped on restart), so restoring this early is exact.
        states = checkpoint.get(RNG_KEY)
        if states and self._trainer is not None and self.trainer.state.fn == "fit":
            rng.restore(rng.select(states))

    def _init_val_metrics(self, dims: Any) -> None:
        """torchmetrics, not Lightning's on_epoch means, so that validation losses aggregate exactly across ranks."""
        self.val_loss = MeanMetric()
        self.val_loss_per_dim = nn.ModuleDict({str(m): MeanMetric() for m in dims})

    def _log_val_losses(self, loss: Tensor, per_dim: dict[int, Tensor], batch_size: int) -> None:
        self.val_loss.update(loss, weight=batch_size)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
        for m, value in per_dim.items():
            metric = self.val_loss_per_dim[str(m)]
            metric.update(value, weight=batch_size)
            self.log(f"val/loss/d{m}", metric, on_step=False, on_epoch=True)

    def _log_train_loss(self, out: Any, batch_size: int) -> None:
        """``train/loss`` every step (progress bar, epoch mean); ``train/loss/d{m}`` on logging steps only.

        One ``self.log`` costs ~0.2 ms; a small decoder's step is ~20 ms, so five per-size epoch means every
        step were most of the Lightning-vs-bare-loop gap. The per-size curves keep the logger's resolution.
        """
        self.log(
            "train/loss", out.loss.detach(), on_step=True, on_epoch=True, batch_size=batch_size, prog_bar=True
        )
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        if (self.global_step + 1) % max(1, every) == 0:
            for m, value in out.per_dim.items():
                self.log(
                    f"train/loss/d{m}", value.detach(), on_step=True, on_epoch=False, batch_size=batch_size
                )


def named_config_errors(prefix: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
    """Build a component, prefixing its ConfigError messages with the YAML section they belong to."""
    try:
        return factory(*args, **kwargs)
    except ConfigError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(f"{prefix}.") else f"{prefix}.{message}") from None
