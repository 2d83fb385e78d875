"""Fits still improving when their budget ran out: the checkpoint selected on dev is the fit's last epoch.

Such a fit's score is a lower bound on what its method reaches with more epochs, so the report names it
(docs/methods.md#checkpoint-selection). A fit counts when its ``fit_result.json`` (:mod:`smec.fit_result`)
selected on a monitor and the selected epoch is the last one its CSV logs hold (or, without logs, the last of
the epochs its budget records).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from smec.errors import ConfigError
from smec.fit_result import read_fit_result

__all__ = ["budget_end_lines", "still_improving"]


def still_improving(runs: Sequence[tuple[str, int, Path]]) -> list[str]:
    """``"<method>/s<seed> (epoch E of N)"`` (1-based) for each fit in ``runs`` (method, seed, fit root) whose
    selected checkpoint is its last epoch; fits without a readable fit result or a monitor are left out."""
    from smec.experiment.runner import epochs_logged

    found = []
    for method, seed, root in runs:
        try:
            result = read_fit_result(root)
        except ConfigError:  # not finished or moved: nothing to judge
            continue
        if result.epoch is None or result.monitor is None:  # the last checkpoint by construction
            continue
        ran = epochs_logged(root) or int((result.budget or {}).get("epochs", 0))
        if ran and result.epoch >= ran - 1:
            found.append(f"{method}/s{seed} (epoch {result.epoch + 1} of {ran})")
    return found


def budget_end_lines(runs: Sequence[tuple[str, int, Path]]) -> list[str]:
    """The report's markdown lines on :func:`still_improving` (none without fits)."""
    if not runs:
        return []
    found = still_improving(runs)
    head = "**Selected at the last epoch?** (the dev-selected checkpoint is the fit's last epoch: still improving"
    if not found:
        return [head + " when its budget ran out)", "- no fit", ""]
    return [head + " at the end of its budget; its score is a lower bound)", "- " + ", ".join(found), ""]
