"""Which corpus rows calibrate the quantisers: one seeded choice shared by the evaluator and `smec export`.

The evaluator fits every quantiser (int8 / int4 ranges, binary thresholds) on a seeded sample of corpus rows
(``calibration_size`` rows drawn by :func:`smec.sampling.sample_rows`; all rows when the sample is at least the
corpus), stacked in the evaluator's corpus order: doc-id-descending (the order that makes search break ties
as trec_eval does). An exported model must carry the quantiser `smec eval` would fit, so both ask here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from smec.sampling import sample_rows


def calibration_positions(
    tie_rank: np.ndarray, calibration_size: int | None, seed: int = 0
) -> np.ndarray | None:
    """Positions, in doc-id-descending order, of the calibration rows (sorted); None = every row.

    Args:
        tie_rank: (n_docs,) rank of each corpus row (in corpus order) in doc-id-descending order, as
            :class:`smec.evaluation.metrics.Qrels` computes it.
        calibration_size: rows in the sample; None, or at least ``n_docs``, means the whole corpus.
        seed: seed of the sample.
    """
    tie_rank = np.asarray(tie_rank)
    n_docs = len(tie_rank)
    if calibration_size is None or calibration_size >= n_docs:
        return None
    return np.sort(tie_rank[sample_rows(n_docs, calibration_size, seed)])


def calibration_rows(corpus_ids: Sequence[str], calibration_size: int | None, seed: int = 0) -> np.ndarray:
    """Indices into ``corpus_ids`` of the calibration rows, in the order the evaluator stacks them."""
    from smec.evaluation.metrics import Qrels

    tie_rank = Qrels({}, [], corpus_ids).tie_rank
    order = np.argsort(tie_rank)  # corpus rows in doc-id-descending order
    positions = calibration_positions(tie_rank, calibration_size, seed)
    return order if positions is None else order[positions]
