"""What ``data.batch_size`` counts under DDP: the global batch of one optimizer step, or each rank's batch."""

from __future__ import annotations

from datamodules.errors import InputError

BATCH_SCOPES = ("global", "rank")


def rank_batch_size(batch_size: int, world: int, scope: str = "global") -> int:
    """Rows each rank's batch holds: ``batch_size / world`` for scope ``global``, ``batch_size`` for ``rank``.

    ``global`` (the default) keeps one optimizer step = ``batch_size`` rows whatever the world size, so a DDP fit
    takes as many steps per epoch, on batches as large, as one process: the recipes' epoch budgets, LR schedules
    and patience mean the same thing. ``rank`` is the usual DDP scale-out (each step sees ``world`` times more
    rows, an epoch takes ``world`` times fewer steps; learning rate and budgets are then the user's to retune).
    """
    if scope not in BATCH_SCOPES:
        raise InputError(f"data.batch_scope: {scope!r} is not one of {', '.join(BATCH_SCOPES)}")
    if scope == "rank" or world == 1:
        return batch_size
    if batch_size % world:
        raise InputError(
            f"data.batch_size: {batch_size} rows cannot be split evenly over {world} DDP processes "
            f"(data.batch_scope: global); use a multiple of {world}, or data.batch_scope: rank"
        )
    return batch_size // world
