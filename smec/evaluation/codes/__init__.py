"""Compressed codes as self-contained components: ITQ binary, RaBitQ, learned-range SQ, LSQ / RQ.

Every code takes (n, d) float vectors — any method's output, L2-normalised — so PCA + RaBitQ or SMEC + ITQ work
by construction; see base.py for the interface (fit / index / search, ``bytes_per_vector``, rescoring) and
grid.py for how the evaluator's grid runs one code into a result row.
"""

from __future__ import annotations

from typing import Any

import faiss

from smec.evaluation.codes.additive import AdditiveCode
from smec.evaluation.codes.base import FAISS_FLOOR, Code, faiss_version, require_faiss
from smec.evaluation.codes.itq import ITQBinary
from smec.evaluation.codes.rabitq import RaBitQ, rabitq_code_size
from smec.evaluation.codes.scalar import LearnedRangeSQ
from smec.evaluation.errors import EvaluationError

# name -> (class, fixed constructor arguments): the names a grid configuration lists.
CODES: dict[str, tuple[type[Code], dict[str, Any]]] = {
    "itq": (ITQBinary, {}),
    "rabitq": (RaBitQ, {"bits": 1}),
    "rabitq2": (RaBitQ, {"bits": 2}),
    "rabitq4": (RaBitQ, {"bits": 4}),
    "sq8-quantiles": (LearnedRangeSQ, {"bits": 8, "rangestat": "quantiles"}),
    "sq8-optim": (LearnedRangeSQ, {"bits": 8, "rangestat": "optim"}),
    "sq4-quantiles": (LearnedRangeSQ, {"bits": 4, "rangestat": "quantiles"}),
    "sq4-optim": (LearnedRangeSQ, {"bits": 4, "rangestat": "optim"}),
    "rq": (AdditiveCode, {"kind": "rq"}),
    "lsq": (AdditiveCode, {"kind": "lsq"}),
    "prq": (AdditiveCode, {"kind": "rq"}),  # with splits=S > 1
    "plsq": (AdditiveCode, {"kind": "lsq"}),
}


# name -> the faiss classes its fit needs: a faiss without one (older, or a build without it) gets one message.
FAISS_NEEDS: dict[str, tuple[str, ...]] = {
    "itq": ("ITQTransform",),
    "rabitq": ("IndexRaBitQ", "RaBitQSearchParameters"),
    "rabitq2": ("IndexRaBitQ", "RaBitQSearchParameters"),
    "rabitq4": ("IndexRaBitQ", "RaBitQSearchParameters"),
    "sq8-quantiles": ("IndexScalarQuantizer",),
    "sq8-optim": ("IndexScalarQuantizer",),
    "sq4-quantiles": ("IndexScalarQuantizer",),
    "sq4-optim": ("IndexScalarQuantizer",),
    "rq": ("IndexResidualQuantizer",),
    "lsq": ("IndexLocalSearchQuantizer",),
    "prq": ("IndexProductResidualQuantizer",),
    "plsq": ("IndexProductLocalSearchQuantizer",),
}


def require_code(name: str) -> None:
    """Raise one EvaluationError when the installed faiss lacks a class code ``name`` needs (FAISS_NEEDS)."""
    missing = [cls for cls in FAISS_NEEDS.get(name, ()) if not hasattr(faiss, cls)]
    if missing:
        floor = ".".join(map(str, FAISS_FLOOR))
        raise EvaluationError(
            f"code {name!r} needs faiss.{missing[0]}, which this faiss {faiss.__version__} lacks: "
            f"pip install 'faiss-cpu>={floor}'"
        )


def make_code(name: str, **params: Any) -> Code:
    """Build the code registered as ``name`` (see CODES) with extra constructor ``params``.

    E.g. ``make_code("rabitq2", qb=8, rescore=200)``, ``make_code("rq", m=48)``. An unknown name or parameter
    raises one EvaluationError listing what exists.
    """
    if name not in CODES:
        raise EvaluationError(f"unknown code {name!r}: expected one of {sorted(CODES)}")
    require_code(name)
    cls, fixed = CODES[name]
    if name in ("prq", "plsq") and params.get("splits", 1) < 2:
        raise EvaluationError(
            f"code {name!r} is a product quantiser: give splits >= 2 (e.g. splits=12 with m=48)"
        )
    clash = sorted(set(fixed) & set(params))
    if clash:
        raise EvaluationError(f"code {name!r} fixes {clash}; choose another code name instead")
    try:
        return cls(**fixed, **params)
    except TypeError as exc:
        raise EvaluationError(f"code {name!r}: bad parameters {sorted(params)}: {exc}") from None


def dim_for_budget(code: Code, budget_bytes: int, max_dim: int, multiple: int = 8) -> int | None:
    """Largest input dim <= ``max_dim`` (a multiple of ``multiple``) whose code fits in ``budget_bytes``.

    E.g. 1-bit RaBitQ in 96 bytes: 704 dims (88 sign bytes + 8 factor bytes); None when even ``multiple``
    dims do not fit (1-bit RaBitQ in 6 bytes: its factors alone take 8).
    """
    for dim in range(max_dim - max_dim % multiple, 0, -multiple):
        if code.bytes_for_dim(dim) <= budget_bytes:
            return dim
    return None


__all__ = [
    "CODES",
    "FAISS_FLOOR",
    "FAISS_NEEDS",
    "AdditiveCode",
    "Code",
    "ITQBinary",
    "LearnedRangeSQ",
    "RaBitQ",
    "dim_for_budget",
    "faiss_version",
    "make_code",
    "rabitq_code_size",
    "require_code",
    "require_faiss",
]
