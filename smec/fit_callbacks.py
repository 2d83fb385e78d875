"""The callbacks every `smec fit` runs, defined once: dev retrieval evaluation, best-on-dev checkpoint, resume, stop.

:class:`smec.lightning_cli.SmecCLI` adds them to every run from two config sections, so no recipe repeats them:

* ``evaluation:`` — the :class:`~smec.evaluation.spec.EvaluationSpec` of the dev evaluation (`smec compare` passes
  the experiment's, so dev selection uses the test grid's evaluator settings);
* ``fit_callbacks:`` — :class:`FitCallbacks`, the few settings a recipe changes (early-stopping patience, say).

The callbacks, in this order:

1. :class:`~smec.evaluation.callback.RetrievalEvalCallback` on ``split`` (dev): logs ``val/ndcg@10/d{dim}/{precision}``
   and the monitor ``val/ndcg@10/mean``, the mean over the target sizes (``mean_dims``; default: the evaluated
   dims below the input width), ``-inf`` while the system cannot be selected (SMRL before its last stage);
2. ``ModelCheckpoint`` keeping the best epoch on the monitor (``best-{epoch:02d}.ckpt``), saved after validation,
   where ``val/*`` exists (also after a resume);
3. :class:`~smec.checkpointing.ResumeCheckpoint`: ``last.ckpt`` after every validation and on ``signals``;
4. :class:`SelectableEarlyStopping` on the monitor with ``patience`` (none when ``patience`` is null), checked
   after validation (a fit resumed from an end-of-epoch checkpoint has no ``val/*`` yet); a validation whose
   monitor is ``-inf`` (not selectable yet) neither counts towards the patience nor stops the fit.

``fit_callbacks: {enabled: false}`` leaves ``trainer.callbacks`` as a run's only callbacks (tests that train
without a dev split, a custom selection).
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from smec.checkpointing import ResumeCheckpoint
from smec.errors import ConfigError
from smec.evaluation.callback import RetrievalEvalCallback
from smec.evaluation.spec import EvaluationSpec
from smec.grad_variance import GradVariance

__all__ = ["FitCallbacks", "SelectableEarlyStopping"]


class SelectableEarlyStopping(EarlyStopping):
    """``EarlyStopping`` that skips validations whose monitor is ``-inf``: the system cannot be selected yet.

    Lightning's own would stop on the non-finite value (``check_finite``), or count it against the patience,
    so an SMRL fit could stop before its last stage starts.
    """

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        current = trainer.callback_metrics.get(self.monitor)
        if current is not None and float(current) == -math.inf:
            return
        super().on_validation_end(trainer, pl_module)


@dataclass(frozen=True)
class FitCallbacks:
    """The ``fit_callbacks:`` section: the project's standard callbacks (module docstring) and their settings.

    Args:
        enabled: add the standard callbacks (default); false: only ``trainer.callbacks``.
        split: the split the retrieval callback evaluates and the checkpoint is selected on (``dev``).
        mean_dims: the dims whose mean nDCG@10 is the monitor (each one of the evaluated dims; null: the target
            sizes, :func:`smec.evaluation.callback.target_dims`).
        patience: EarlyStopping's patience in validations without improvement; null: no early stopping.
        signals: signals that stop a fit with a resumable ``last.ckpt`` (:class:`~smec.checkpointing.ResumeCheckpoint`).
        grad_variance: the submodule whose gradient variance is logged every step (:mod:`smec.grad_variance`,
            e.g. ``compressor.blocks.0``, SMEC's shared first layer); null (default): off.
    """

    enabled: bool = True
    split: str = "dev"
    mean_dims: tuple[int, ...] | None = None
    patience: int | None = 8
    signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1")
    grad_variance: str | None = None

    def build(self, spec: EvaluationSpec) -> list[Callback]:
        """The callbacks of a run whose dev evaluation follows ``spec`` (none when not ``enabled``)."""
        if not self.enabled:
            return []
        if self.patience is not None and (isinstance(self.patience, bool) or self.patience < 1):
            raise ConfigError(
                f"fit_callbacks.patience must be a positive integer or null, got {self.patience!r}"
            )
        unknown = [name for name in self.signals if name not in signal.Signals.__members__]
        if unknown:
            raise ConfigError(
                f"fit_callbacks.signals: {unknown} are not signal names (e.g. SIGTERM, SIGUSR1)"
            )
        monitor = f"val/ndcg@{spec.ndcg_at}/mean"
        callbacks: list[Callback] = [
            RetrievalEvalCallback(spec, split=self.split, mean_dims=self.mean_dims),
            ModelCheckpoint(
                save_on_train_epoch_end=False, monitor=monitor, mode="max", filename="best-{epoch:02d}"
            ),
            ResumeCheckpoint(signals=tuple(self.signals)),
        ]
        if self.grad_variance is not None:
            callbacks.append(GradVariance(self.grad_variance))
        if self.patience is not None:
            callbacks.append(
                SelectableEarlyStopping(
                    check_on_train_epoch_end=False, monitor=monitor, mode="max", patience=self.patience
                )
            )
        return callbacks
