"""Errors raised by the evaluation package for bad input (arrays, ids, qrels, options), and its warnings."""

from datamodules.errors import InputError


class EvaluationError(InputError):
    """Evaluation input we cannot use: mismatched ids and arrays, an unknown precision, an impossible dim."""


# faiss's k-means asks for at least this many training points per centroid (it warns below that).
FAISS_MIN_POINTS_PER_CENTROID = 39


class SmallSampleWarning(UserWarning):
    """A faiss k-means (OPQ + PQ, RQ's codebooks) fitted on fewer rows than faiss recommends: one line instead of
    faiss's flood (one print per sub-quantiser / codebook and iteration)."""
