"""The grid of an embedding store: training-free baselines on its base models, or its compressed models.

`smec eval` and `smec compare` read a store through here, with one :class:`~smec.evaluation.spec.EvaluationSpec`
for both, so baseline rows and trained rows compare like for like:

* a store of frozen base-model embeddings (`smec embed`): :func:`baseline_rows`, the training-free grid on the
  L2-concatenation of its models (and each model alone);
* a store of compressed embeddings (`smec predict`): :func:`compressed_rows`, each compressed model at its
  nested prefixes, or, for a model recorded with ``prefix_nested: false`` (one size of a system whose sizes are
  not prefixes of each other, e.g. SMEC's ``smec-d96``), at its stored width only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smec.evaluation.codes.grid import evaluate_planned, grid_budgets, plan_codes
from smec.evaluation.errors import EvaluationError
from smec.evaluation.grid import evaluate_grid, note_dropped
from smec.evaluation.spec import AUTO_DIMS, EvaluationSpec

if TYPE_CHECKING:
    import numpy as np

    from datamodules.store.reader import EmbeddingStore
    from smec.evaluation.evaluator import RetrievalEvaluator


def store_evaluator(
    store: EmbeddingStore, split: str, input_dim: int, spec: EvaluationSpec
) -> RetrievalEvaluator:
    """The evaluator of ``split`` of ``store`` with the spec's settings (``input_dim``: the float32 input)."""
    return spec.evaluator(store.qrels(split), store.ids(f"queries/{split}"), store.ids("corpus"), input_dim)


def grid_dims(spec: EvaluationSpec, width: int, what: str, dropped: list[str]) -> list[int]:
    """The spec's dims for a representation ``width`` wide (without its full width).

    Explicit dims wider than the input are an error; without dims the grid is the automatic :data:`AUTO_DIMS`,
    and those wider than the input are left out (noted in ``dropped``).
    """
    dims = sorted(spec.dims if spec.dims is not None else AUTO_DIMS)
    wide = [d for d in dims if d > width]
    if wide and spec.dims is not None:
        raise EvaluationError(f"--dims {wide}: wider than the input ({what} has {width} dims)")
    if wide:
        dropped.append(f"default dims {wide} (wider than the input: {what} has {width} dims)")
    return [d for d in dims if d <= width]


def baseline_rows(
    store: EmbeddingStore,
    keys: Sequence[str],
    split: str,
    spec: EvaluationSpec,
    *,
    run_dir: Path | None = None,
    single_only: Sequence[str] = (),
    dropped: list[str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The training-free grid (:func:`~smec.evaluation.baselines.run_baselines`) on the L2-concatenation of
    ``keys`` in a raw store, at the spec's dims (:func:`grid_dims`).

    ``single_only``: more models evaluated alone (``model:<key>`` rows) but not concatenated. Returns
    ``(rows, input_dim)``, input_dim being the concatenation's width.
    """
    from datamodules.store.combine import combine
    from smec.evaluation.baselines import run_baselines

    notes: list[str] = []
    models = [*keys, *single_only]
    # Straight from the shards, in row chunks: no model's corpus is held in its stored dtype beside the float32
    # concatenation, and each model alone is combined when the grid reaches it (_OneModel), then let go.
    cq = combine([store.array(k, f"queries/{split}") for k in keys])
    cc = combine([store.array(k, "corpus") for k in keys])
    width = int(cc.shape[1])
    rows = run_baselines(
        store_evaluator(store, split, width, spec),
        _OneModel(store, models, f"queries/{split}"),
        _OneModel(store, models, "corpus"),
        cq,
        cc,
        grid_dims(spec, width, f"the concatenation of {', '.join(keys)}", notes),
        spec,
        run_dir=run_dir,
        dropped=notes,
    )
    note_dropped(notes, dropped)
    return rows, width


class _OneModel(Mapping[str, "np.ndarray"]):
    """Each model's rows of one text set, L2-normalised float32, read from the store when looked up (not kept)."""

    def __init__(self, store: EmbeddingStore, keys: Sequence[str], text_set: str) -> None:
        self.store, self.keys, self.text_set = store, list(keys), text_set

    def __getitem__(self, key: str) -> np.ndarray:
        from datamodules.store.combine import combine

        if key not in self.keys:
            raise KeyError(key)
        return combine([self.store.array(key, self.text_set)], "l2-concat")

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def compressed_rows(
    store: EmbeddingStore,
    keys: Sequence[str],
    split: str,
    spec: EvaluationSpec,
    *,
    run_dir: Path | None = None,
    dropped: list[str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Each compressed model of ``keys`` at the spec's dims below its width, plus its width.

    A model recorded with ``prefix_nested: false`` is evaluated at its stored width only: its prefixes are not
    sizes of the system that wrote it, and asking for other dims (explicit dims) is an error. Returns ``(rows,
    input_dim)``, input_dim being the width of the float32 input the models compressed (compression factors are
    relative to it).
    """
    infos = {k: store.meta["models"][k]["model"] for k in keys}
    single_size = [k for k in keys if infos[k].get("prefix_nested") is False]
    asked = set(spec.dims or ())
    other = [k for k in single_size if spec.dims is not None and asked != {store.model_dim(k)}]
    if other:
        widths = ", ".join(f"{k}: {store.model_dim(k)}" for k in other)
        raise EvaluationError(
            f"--dims {sorted(asked)}: {', '.join(other)}: one size of a system whose sizes are not prefixes "
            f"(prefix_nested: false), evaluated at its width only ({widths}); leave out --dims, or choose models "
            "with --models"
        )
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    input_dim = 0
    for key in keys:
        input_dim = int(infos[key].get("input_dim") or store.model_dim(key))
        width = store.model_dim(key)
        dims = [] if key in single_size else grid_dims(spec, width, key, notes)
        evaluator = store_evaluator(store, split, input_dim, spec)
        queries, corpus = store.array(key, f"queries/{split}").read(), store.array(key, "corpus").read()
        key_dims = [d for d in dims if d < width] + [width]
        rows += evaluate_grid(
            evaluator, key, queries, corpus, key_dims, spec.precisions, run_dir=run_dir, dropped=notes
        )
        # The codes: on the prefixes of a prefix-nested model, on the whole vector of a single size.
        budgets = grid_budgets(key_dims, spec.precisions, input_dim)
        plan = plan_codes(spec.codes, key, budgets, [width] if key in single_size else width, notes)
        rows += [evaluate_planned(evaluator, p, key, queries, corpus, run_dir) for p in plan]
    note_dropped(notes, dropped)
    return rows, input_dim


def source_models(infos: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    """The base models the compressed models ``keys`` were made from, in order, each once."""
    return list(dict.fromkeys(m for k in keys for m in infos[k].get("source_models", [])))
