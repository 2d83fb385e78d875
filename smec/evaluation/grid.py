"""The grid: rows of one representation, or of one compression system, at dims x precisions.

Every grid of the project runs through here: the training-free baselines (baselines.py), a store's compressed
models (`smec eval`, store_grid.py), a trained system's dev rows during training (callback.py) and its test rows
in `smec compare`. The spec's codes (:mod:`smec.evaluation.codes`) run on top of a system's output when asked
(``codes``: the test grid and `smec eval`, not the dev callback). A grid point that cannot be computed in an automatic grid (binary codes at a width that is not
a whole number of bytes) is left out and said in one :class:`GridWarning` line.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from smec.evaluation.evaluator import RetrievalEvaluator

if TYPE_CHECKING:
    from smec.evaluation.spec import CodeSpec


class GridWarning(UserWarning):
    """Grid points an automatic grid could not compute and left out: one warning per grid, naming each."""


def warn_dropped(dropped: Sequence[str]) -> None:
    """The one warning line for every point a grid left out (nothing when none was)."""
    if dropped:
        warnings.warn("left out of the grid: " + "; ".join(dropped), GridWarning, stacklevel=3)


def note_dropped(notes: Sequence[str], dropped: list[str] | None) -> None:
    """Append ``notes`` to the caller's ``dropped`` list, or warn them now when there is no list."""
    if dropped is None:
        warn_dropped(notes)
    else:
        dropped += notes


def binary_note(method: str, dims: Sequence[int]) -> str:
    return f"{method} binary at dims {list(dims)} (binary codes need a multiple of 8 dims)"


def evaluate_grid(
    evaluator: RetrievalEvaluator,
    method: str,
    queries: np.ndarray,
    corpus: np.ndarray,
    dims: Sequence[int],
    precisions: Sequence[str],
    run_dir: Path | None = None,
    dropped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """``evaluator.evaluate`` over dims x precisions, where binary codes skip dims that are not multiples of 8.

    Binary needs whole bytes, so dims that are not multiples of 8 get the remaining precisions only (instead of
    the evaluator's error): the grid of any representation, whatever its widths. What is skipped is appended to
    ``dropped``, or, without a list, said in one :class:`GridWarning`.
    """
    rows: list[dict[str, Any]] = []
    byte_dims = [d for d in dims if d % 8 == 0]
    odd_dims = [d for d in dims if d % 8]
    if byte_dims:
        rows += evaluator.evaluate(method, queries, corpus, byte_dims, precisions, run_dir=run_dir)
    other = [p for p in precisions if p != "binary"]
    if odd_dims and other:
        rows += evaluator.evaluate(method, queries, corpus, odd_dims, other, run_dir=run_dir)
    if odd_dims and "binary" in precisions:
        note_dropped([binary_note(method, odd_dims)], dropped)
    return rows


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


def evaluate_system(
    module: torch.nn.Module,
    queries: np.ndarray,
    corpus: np.ndarray,
    evaluator: RetrievalEvaluator,
    dims: Sequence[int],
    precisions: Sequence[str],
    method: str,
    batch_size: int = 4096,
    run_dir: Path | None = None,
    dropped: list[str] | None = None,
    codes: Sequence[CodeSpec] = (),
) -> list[dict[str, Any]]:
    """The evaluator's rows for a compression system at ``dims`` x ``precisions``, then its code rows.

    Prefix-nested systems (``prefix_nested`` True: MRL, the adaptors) are compressed once and evaluated at
    prefixes; others (SMEC's chain) are embedded once per size. Dims that are not a multiple of 8 skip binary
    (see :func:`evaluate_grid`), said in one warning (or appended to ``dropped``). ``codes``: the spec's codes,
    on the prefixes of a prefix-nested output, or on each size whole (:mod:`smec.evaluation.codes.grid`), at
    the grid's budgets; the dev callback passes none (their fits would cost seconds per row per validation).

    A sparse system (one with ``storage_bits(size, precision)``, CSR) has its rows from
    :func:`smec.evaluation.sparse.evaluate_sparse`: full-width codes, the true bits of k indices and k values
    (the codes do not apply: its sizes are sparsity levels, not widths).
    """
    from smec.evaluation.codes.grid import code_rows, evaluate_planned, grid_budgets, plan_codes

    if hasattr(module, "storage_bits"):
        return _sparse_rows(module, queries, corpus, evaluator, dims, precisions, method, batch_size, run_dir)
    budgets = grid_budgets(dims, precisions, evaluator.input_dim)
    notes: list[str] = []
    was_training = module.training
    module.eval()
    try:
        rows: list[dict[str, Any]] = []
        if getattr(module, "prefix_nested", True):
            q = compress_rows(module, queries, batch_size=batch_size)
            c = compress_rows(module, corpus, batch_size=batch_size)
            rows = evaluate_grid(evaluator, method, q, c, dims, precisions, run_dir=run_dir, dropped=notes)
            rows += code_rows(evaluator, codes, method, q, c, budgets, run_dir=run_dir, dropped=notes)
        else:
            skipped: list[str] = []
            plan = plan_codes(codes, method, budgets, list(dims), notes)
            for dim in dims:  # every size is its own vector
                q = compress_rows(module, queries, dim, batch_size)
                c = compress_rows(module, corpus, dim, batch_size)
                rows += evaluate_grid(
                    evaluator, method, q, c, [dim], precisions, run_dir=run_dir, dropped=skipped
                )
                rows += [evaluate_planned(evaluator, p, method, q, c, run_dir) for p in plan if p.dim == dim]
            if skipped:  # one note for the whole grid, not one per size
                notes.append(binary_note(method, [d for d in dims if d % 8]))
    finally:
        module.train(was_training)
    note_dropped(notes, dropped)
    return rows


def _sparse_rows(
    module: torch.nn.Module,
    queries: np.ndarray,
    corpus: np.ndarray,
    evaluator: RetrievalEvaluator,
    dims: Sequence[int],
    precisions: Sequence[str],
    method: str,
    batch_size: int,
    run_dir: Path | None,
) -> list[dict[str, Any]]:
    """A sparse system's rows (see :func:`evaluate_system`): one code per sparsity level k."""
    from smec.evaluation.sparse import evaluate_sparse

    was_training = module.training
    module.eval()
    try:
        return [
            row
            for k in dims
            for row in evaluate_sparse(
                evaluator,
                method,
                compress_rows(module, queries, k, batch_size),
                compress_rows(module, corpus, k, batch_size),
                k,
                precisions,
                module.storage_bits,
                run_dir=run_dir,
            )
        ]
    finally:
        module.train(was_training)
