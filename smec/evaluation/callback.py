"""Lightning callback: retrieval nDCG@10 / Recall@100 / MRR@10 of any compression system at validation end.

The contract with the rest of the project:

* ``trainer.datamodule.eval_data(split)`` returns an object with ``queries`` (nq, D) and ``corpus`` (nc, D)
  float32 arrays, ``query_ids``, ``corpus_ids``, ``qrels`` (``{qid: {docid: grade}}``) and ``input_dim``;
* ``pl_module`` is a compression system (:class:`smec.systems.base.CompressionSystem`): ``compress`` /
  ``embed``, ``eval_dims`` and ``prefix_nested``, evaluated by :func:`smec.evaluation.grid.evaluate_system`,
  the function `smec compare`'s test grid calls too.

The evaluator comes from an :class:`~smec.evaluation.spec.EvaluationSpec`, the one `smec compare` hands to
every fit (``--evaluation``), so a checkpoint is selected on dev with the test grid's quantiser calibration,
scoring and cut-offs: the dev rows of a checkpoint and its test rows differ only in the split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np

from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.grid import evaluate_system
from smec.evaluation.spec import DEFAULT_SPEC, EvaluationSpec


def target_dims(module: Any, dims: Sequence[int]) -> list[int]:
    """The target sizes among ``dims``: those below ``module.input_dim`` (all of them if none is, or if the
    module has no ``input_dim``). The default dims of the selection monitor (:class:`RetrievalEvalCallback`)."""
    input_dim = getattr(module, "input_dim", None)
    below = [int(d) for d in dims if input_dim is None or d < input_dim]
    return below or [int(d) for d in dims]


class RetrievalEvalCallback(pl.Callback):
    """Run the shared RetrievalEvaluator at the end of validation and log its grid.

    Logged keys (on every rank, identical values, so ``ModelCheckpoint(monitor=...)`` works under DDP):
    ``val/ndcg@10/d{dim}/{precision}``, ``val/recall@100/d{dim}/{precision}``,
    ``val/mrr@10/d{dim}/{precision}`` (cut-offs follow the spec), and ``val/ndcg@10/mean``: the mean nDCG@10 of
    the spec's first precision over ``mean_dims``, the selection monitor.

    Selection at the target sizes (docs/methods.md#checkpoint-selection). The monitor's default dims are the
    *target* sizes, :func:`target_dims`: the evaluated dims below the system's input width (a size as wide as
    the input compresses nothing: SMEC's chain starts there, the adaptors' default sizes end there). A system
    can also say that it cannot be selected yet (``selectable`` False: SMEC's SMRL before its last stage has
    started) or which sizes are trained so far (``available_dims``): the other sizes are not evaluated, and the
    monitor is then logged as ``-inf``, so no checkpoint of that state can win the selection (the project's
    ``EarlyStopping`` does not count such validations, :mod:`smec.fit_callbacks`).

    Args:
        spec: the evaluation spec: evaluator settings, ``precisions``, and ``dims`` (None, the default: the
            model's ``eval_dims``).
        split: passed to ``datamodule.eval_data`` (default ``"dev"``; never tune on the test split).
        every_n_epochs: evaluate after epochs ``n, 2n, ...`` of fit (always under ``trainer.validate``);
            skipped during the sanity check. Epochs without evaluation log nothing, so a ``ModelCheckpoint``
            monitoring these keys needs the same ``every_n_epochs`` (Lightning raises on a missing monitored
            key).
        mean_dims: the dims the ``mean`` key averages (each one of the evaluated dims); None = the target sizes
            (:func:`target_dims`).
        batch_size: rows per ``compress`` call.
        method: the ``method`` field of the rows kept in ``last_rows``.

    Only global rank 0 compresses and scores; the metrics are broadcast with ``trainer.strategy.broadcast``.
    """

    def __init__(
        self,
        spec: EvaluationSpec = DEFAULT_SPEC,
        split: str = "dev",
        every_n_epochs: int = 1,
        mean_dims: Sequence[int] | None = None,
        batch_size: int = 4096,
        method: str = "val",
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise EvaluationError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if mean_dims is not None and not mean_dims:
            raise EvaluationError("mean_dims must name at least one dim (or be null: every evaluated dim)")
        self.spec = spec
        self.split = split
        self.every_n_epochs = every_n_epochs
        self.mean_dims = None if mean_dims is None else [int(d) for d in mean_dims]
        self.batch_size = batch_size
        self.method = method
        self.last_rows: list[dict[str, Any]] | None = None
        self._data: Any = None
        self._evaluator: RetrievalEvaluator | None = None

    def _due(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if trainer.state.fn != "fit":
            return True
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _evaluator_for(self, data: Any) -> RetrievalEvaluator:
        if data is not self._data or self._evaluator is None:
            self._evaluator = self.spec.evaluator(
                data.qrels, list(data.query_ids), list(data.corpus_ids), int(data.input_dim)
            )
            self._data = data
        return self._evaluator

    def dims_for(self, pl_module: pl.LightningModule) -> list[int]:
        """The dims evaluated for ``pl_module``: the spec's, else the model's ``eval_dims``."""
        dims = self.spec.dims if self.spec.dims is not None else pl_module.eval_dims
        return [int(d) for d in dims]

    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Compress the split, evaluate, and return ``{log key: value}`` (runs on the calling rank only)."""
        get = getattr(trainer.datamodule, "eval_data", None)
        if get is None:
            raise EvaluationError("RetrievalEvalCallback needs a datamodule with an eval_data(split) method")
        data = get(self.split)
        evaluator = self._evaluator_for(data)
        dims = self.dims_for(pl_module)
        mean_dims = self.mean_dims if self.mean_dims is not None else target_dims(pl_module, dims)
        missing = [d for d in mean_dims if d not in dims]
        if missing:
            raise EvaluationError(f"mean_dims {missing} are not among the evaluated dims {dims}")
        trained = getattr(pl_module, "available_dims", None)  # SMEC: the sizes whose stage has started
        ready = [d for d in dims if trained is None or d in trained]
        rows = (
            evaluate_system(
                pl_module,
                data.queries,
                data.corpus,
                evaluator,
                ready,
                self.spec.precisions,
                self.method,
                self.batch_size,
            )
            if ready
            else []
        )
        self.last_rows = rows
        metrics = {
            f"val/{measure}/d{row['dim']}/{row['precision']}": float(row[measure])
            for row in rows
            for measure in evaluator.measures
        }
        first = self.spec.precisions[0]
        selected = [
            float(r[evaluator.measures[0]]) for r in rows if r["precision"] == first and r["dim"] in mean_dims
        ]
        selectable = bool(getattr(pl_module, "selectable", True)) and set(mean_dims) <= set(ready)
        metrics[f"val/{evaluator.measures[0]}/mean"] = float(np.mean(selected)) if selectable else -math.inf
        return metrics

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        payload: tuple[str, Any] | None = None
        if trainer.is_global_zero:
            try:
                payload = ("ok", self.compute(trainer, pl_module))
            except Exception as exc:  # every rank must reach the broadcast, then all raise together
                payload = ("error", f"{type(exc).__name__}: {exc}")
                error = exc
        payload = trainer.strategy.broadcast(payload, src=0)
        status, content = payload
        if status == "error":
            if trainer.is_global_zero:
                raise error
            raise EvaluationError(f"retrieval evaluation failed on rank 0: {content}")
        for name, value in content.items():
            pl_module.log(name, value, on_step=False, on_epoch=True, sync_dist=False, batch_size=1)
