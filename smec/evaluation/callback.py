"""Lightning callback: retrieval nDCG@10 / Recall@100 / MRR@10 of any compression system at validation end.

The contract with the rest of the project:

* ``trainer.datamodule.eval_data(split)`` returns an object with ``queries`` (nq, D) and ``corpus`` (nc, D)
  float32 arrays, ``query_ids``, ``corpus_ids``, ``qrels`` (``{qid: {docid: grade}}``) and ``input_dim``;
* ``pl_module.compress(x: torch.Tensor (n, D)) -> torch.Tensor (n, d_max)`` maps input embeddings to the
  compressed space whose prefixes are evaluated;
* optionally ``pl_module.index_sets() -> {dim: index array} | None`` selects columns per dim instead of
  prefixes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator


class RetrievalEvalCallback(pl.Callback):
    """Run the shared RetrievalEvaluator at the end of validation and log its grid.

    Logged keys (on every rank, identical values, so ``ModelCheckpoint(monitor=...)`` works under DDP):
    ``val/ndcg@10/d{dim}/{precision}``, ``val/recall@100/d{dim}/{precision}``,
    ``val/mrr@10/d{dim}/{precision}`` (cut-offs follow the evaluator's settings).

    Args:
        dims: dims to evaluate (prefixes of ``compress`` output, or ``index_sets`` entries).
        precisions: default ``("float32", "int8")``.
        split: passed to ``datamodule.eval_data`` (default ``"dev"``; never tune on the test split).
        every_n_epochs: evaluate after epochs ``n, 2n, ...`` of fit (always under ``trainer.validate``);
            skipped during the sanity check. Epochs without evaluation log nothing, so a ``ModelCheckpoint``
            monitoring these keys needs the same ``every_n_epochs`` (Lightning raises on a missing monitored
            key).
        k: search depth.
        batch_size: rows per ``compress`` call.
        evaluator_kwargs: extra RetrievalEvaluator options (e.g. ``{"int_scoring": "asymmetric"}``).
        method: the ``method`` field of the rows kept in ``last_rows``.

    Only global rank 0 compresses and scores; the metrics are broadcast with ``trainer.strategy.broadcast``.
    """

    def __init__(
        self,
        dims: Sequence[int] | None = None,
        precisions: Sequence[str] = ("float32", "int8"),
        split: str = "dev",
        every_n_epochs: int = 1,
        k: int = 100,
        batch_size: int = 4096,
        evaluator_kwargs: Mapping[str, Any] | None = None,
        method: str = "val",
    ) -> None:
        super().__init__()
        if dims is not None and not dims:
            raise EvaluationError(
                "RetrievalEvalCallback needs at least one dim (or dims: null for the model's eval_dims)"
            )
        if every_n_epochs < 1:
            raise EvaluationError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.dims = None if dims is None else [int(d) for d in dims]
        self.precisions = tuple(precisions)
        self.split = split
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.batch_size = batch_size
        self.evaluator_kwargs = dict(evaluator_kwargs or {})
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
            self._evaluator = RetrievalEvaluator(
                data.qrels,
                list(data.query_ids),
                list(data.corpus_ids),
                input_dim=int(data.input_dim),
                k=self.k,
                **self.evaluator_kwargs,
            )
            self._data = data
        return self._evaluator

    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Compress the split, evaluate, and return ``{log key: value}`` (runs on the calling rank only)."""
        get = getattr(trainer.datamodule, "eval_data", None)
        if get is None:
            raise EvaluationError("RetrievalEvalCallback needs a datamodule with an eval_data(split) method")
        data = get(self.split)
        evaluator = self._evaluator_for(data)
        dims = self.dims if self.dims is not None else [int(d) for d in pl_module.eval_dims]
        rows = evaluate_system(
            pl_module,
            data.queries,
            data.corpus,
            evaluator,
            dims,
            self.precisions,
            self.method,
            self.batch_size,
        )
        self.last_rows = rows
        metrics = {
            f"val/{measure}/d{row['dim']}/{row['precision']}": float(row[measure])
            for row in rows
            for measure in evaluator.measures
        }
        first = [float(r[evaluator.measures[0]]) for r in rows if r["precision"] == self.precisions[0]]
        metrics[f"val/{evaluator.measures[0]}/mean"] = float(np.mean(first))
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


def compress_rows(
    module: torch.nn.Module, x: np.ndarray, dim: int | None = None, batch_size: int = 4096
) -> np.ndarray:
    """``module.compress`` (or ``module.embed(., dim)``) over the rows of ``x`` in batches, without gradient."""
    device = getattr(module, "device", None) or next(module.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = torch.as_tensor(np.asarray(x[start : start + batch_size]), dtype=torch.float32).to(device)
            y = module.compress(batch) if dim is None else module.embed(batch, dim)
            out.append(y.float().cpu().numpy())
    return np.concatenate(out, axis=0)


def system_index_sets(module: torch.nn.Module) -> dict[int, np.ndarray] | None:
    """``module.index_sets()`` as numpy arrays, or None when the sizes are prefixes."""
    getter = getattr(module, "index_sets", None)
    sets = getter() if callable(getter) else None
    if sets is None:
        return None
    return {
        int(d): (idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx))
        for d, idx in sets.items()
    }


def evaluate_system(
    module: torch.nn.Module,
    queries: np.ndarray,
    corpus: np.ndarray,
    evaluator: RetrievalEvaluator,
    dims: Sequence[int],
    precisions: Sequence[str],
    method: str,
    batch_size: int = 4096,
    run_dir: Any = None,
    dropped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The evaluator's rows for a compression system at ``dims`` x ``precisions``.

    Prefix-nested systems (``prefix_nested`` True: MRL, the adaptors) are compressed once and evaluated at
    prefixes or their ``index_sets``; others (SMEC's chain) are embedded once per size. Dims that are not a
    multiple of 8 skip binary (see ``evaluate_grid``), said in one warning (or appended to ``dropped``).
    """
    from smec.evaluation.baselines import binary_note, evaluate_grid, warn_dropped

    notes: list[str] = []
    was_training = module.training
    module.eval()
    try:
        rows: list[dict[str, Any]] = []
        if getattr(module, "prefix_nested", True):
            q = compress_rows(module, queries, batch_size=batch_size)
            c = compress_rows(module, corpus, batch_size=batch_size)
            rows = evaluate_grid(
                evaluator,
                method,
                q,
                c,
                dims,
                precisions,
                run_dir=run_dir,
                dropped=notes,
                index_sets=system_index_sets(module),
            )
        else:
            skipped: list[str] = []
            for dim in dims:  # every size is its own vector
                q = compress_rows(module, queries, dim, batch_size)
                c = compress_rows(module, corpus, dim, batch_size)
                rows += evaluate_grid(
                    evaluator, method, q, c, [dim], precisions, run_dir=run_dir, dropped=skipped
                )
            if skipped:  # one note for the whole grid, not one per size
                notes.append(binary_note(method, [d for d in dims if d % 8]))
    finally:
        module.train(was_training)
    if dropped is None:
        warn_dropped(notes)
    else:
        dropped += notes
    return rows
