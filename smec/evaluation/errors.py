"""Errors raised by the evaluation package for bad input (arrays, ids, qrels, options)."""

from datamodules.errors import InputError


class EvaluationError(InputError):
    """Evaluation input we cannot use: mismatched ids and arrays, an unknown precision, an impossible dim."""
