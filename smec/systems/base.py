"""What every compression system offers the evaluator callback, the predict writer and the CLI.

The dims contract, the same in every system:

- ``dims`` are the sizes a system trains, ``eval_dims`` the sizes the dev callback and the test grid evaluate;
- trained sizes = ``dims`` if given, else ``eval_dims`` if given, else the system's documented default
  (:func:`trained_sizes`);
- ``eval_dims`` = ``eval_dims`` if given, else the trained sizes, ascending; a size the system cannot produce
  exactly is a ConfigError naming ``model.eval_dims``, the size and what the system produces
  (:func:`resolve_eval_dims`), never a silent drop or a silent prefix.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
from torch import Tensor, nn
from torchmetrics import MeanMetric

from smec import rng
from smec.errors import ConfigError
from smec.validation import check_dims

RNG_KEY = "smec_rng_states"
"""Checkpoint key of every rank's generator states (:func:`smec.rng.gather`)."""


class CompressionSystem(L.LightningModule):
    """What every compression system offers the evaluator, the predict writer and the CLI.

    Subclasses set ``self.output_dim`` and ``self.eval_dims`` (module docstring: the dims contract) and implement
    :meth:`compress`.
    """

    method_name = "compressor"
    # True when every nested size is a prefix of compress(x); SMEC's SMRL chain sets False (embed per size).
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

    def budget_details(self, trainer: Any) -> dict[str, Any]:
        """What fit_result.json's ``budget`` adds beyond the optimizer steps and epochs (SMEC: steps per stage)."""
        return {}

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

    def _plain_hyperparameters(self, **groups: Any) -> None:
        """Store settings dataclasses as plain dicts in the hyper-parameters (and their logged copy).

        A checkpoint then holds only what ``torch.load(weights_only=True)`` builds (no allow-listed classes,
        :mod:`smec.checkpoint`), and :func:`smec.checkpoint.differences` compares them key by key with the
        config's. The constructor accepts these dicts back (:func:`smec.validation.settings`).
        """
        for name, value in groups.items():
            plain = dataclasses.asdict(value)
            self._hparams[name] = plain
            self._hparams_initial[name] = copy.deepcopy(plain)

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


def trained_sizes(
    dims: Sequence[int] | None, eval_dims: Sequence[int] | None, default: Any
) -> tuple[Any, str]:
    """The sizes a system trains and the option they come from (for messages): ``dims`` if given, else
    ``eval_dims`` if given, else the system's ``default`` (named ``dims``)."""
    if dims is not None:
        return dims, "dims"
    return (eval_dims, "eval_dims") if eval_dims is not None else (default, "dims")


def resolve_eval_dims(
    eval_dims: Sequence[int] | None,
    trained: Sequence[int],
    method: str,
    produces: Callable[[int], bool],
    what: str,
) -> tuple[int, ...]:
    """``model.eval_dims`` checked against what the system produces, or the trained sizes ascending.

    Args:
        eval_dims: the configured sizes (None: the trained sizes).
        trained: the trained sizes.
        method: the system's name, for the message.
        produces: whether the system produces a size exactly.
        what: what it produces, for the message (``its trained prefix sizes model.dims [32, 64]``).
    """
    if eval_dims is None:
        return tuple(sorted(trained))
    sizes = check_dims(eval_dims, None, name="model.eval_dims")
    bad = [d for d in sizes if not produces(d)]
    if bad:
        raise ConfigError(
            f"model.eval_dims {list(sizes)}: {method} cannot produce the size(s) {bad} exactly; it produces {what}"
        )
    return sizes
