"""The test grid of a comparison: each finished fit's selected checkpoint on the experiment's split.

A fit is read from its own ``fit_result.json`` (:mod:`smec.fit_result`): the checkpoint it selected on dev, its
system's class and its data settings, from which the input is rebuilt as the fit saw it (store, models,
normalisation, model weights). The rows come from :func:`smec.evaluation.grid.evaluate_system` with the
evaluator the experiment's :class:`~smec.evaluation.spec.EvaluationSpec` builds, the very function and evaluator
settings of the fit's dev callback: the dev rows of a checkpoint and its test rows differ only in the split. The
test grid also runs the spec's codes on each system's output (the dev callback does not).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smec.evaluation.spec import EvaluationSpec
from smec.experiment.config import ExperimentError
from smec.fit_result import FitResult, read_fit_result

__all__ = ["TestGrid", "load_system"]


def load_system(class_path: str, checkpoint: Path) -> Any:
    """The compression system of ``class_path`` restored from a fit's checkpoint (:func:`smec.checkpoint.load_system`)."""
    from smec.checkpoint import load_system as load

    return load(checkpoint, "test grid", class_path=class_path)


class TestGrid:
    """Rows of fits on one split with one spec; the input and the evaluator are built once per data setting.

    Args:
        spec: the evaluation spec (its ``dims`` are the grid's; required).
        split: the qrels split (the experiment's ``split``, test).
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, spec: EvaluationSpec, split: str) -> None:
        if spec.dims is None:
            raise ExperimentError("the test grid needs the spec's dims")
        self.spec = spec
        self.split = split
        self._data: dict[str, tuple[Any, Any]] = {}

    def eval_data(self, data: Mapping[str, Any]) -> tuple[Any, Any]:
        """(the split's EvalData, its evaluator) for a fit's data settings (``FitResult.data``)."""
        from datamodules.embedding import EmbeddingDataModule

        key = json.dumps(
            [data.get("store"), data.get("models"), data.get("normalization"), data.get("model_weights")],
            default=str,
        )
        if key not in self._data:
            dm = EmbeddingDataModule(
                store=data["store"],
                models=data.get("models"),
                normalization=data["normalization"],
                model_weights=data.get("model_weights"),
            )
            split = dm.eval_data(self.split)
            evaluator = self.spec.evaluator(
                split.qrels, split.query_ids, split.corpus_ids, int(split.input_dim)
            )
            self._data[key] = (split, evaluator)
        return self._data[key]

    def rows(
        self, root: Path, method: str, dims: Sequence[int] | None = None
    ) -> tuple[list[dict[str, Any]], FitResult, int]:
        """The rows of the fit in ``root`` (its fit_result.json's checkpoint) named ``method`` at ``dims``
        (default: the spec's), its FitResult, and the input width the compression factors are relative to."""
        from smec.evaluation.grid import evaluate_system

        result = read_fit_result(root, "test grid")
        model = load_system(result.model_class, result.checkpoint_path(root))
        data, evaluator = self.eval_data(result.data)
        dims = self.spec.dims if dims is None else dims
        assert dims is not None
        rows = evaluate_system(
            model,
            data.queries,
            data.corpus,
            evaluator,
            list(dims),
            self.spec.precisions,
            method,
            codes=self.spec.codes,
        )
        return rows, result, int(data.input_dim)
