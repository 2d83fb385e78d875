"""The evaluation spec: every setting of the grid and the evaluator, defined once.

One :class:`EvaluationSpec` is what `smec eval`'s options default to, what an experiment's ``evaluation:`` section
(and its older top-level ``dims`` / ``precisions`` / ``baselines`` keys) fills in, what `smec compare` hands to
every fit (``--evaluation=<spec>``) and what the dev callback builds its evaluator from, so a checkpoint is
selected on dev with the quantiser calibration, scoring and cut-offs of the test grid it is then scored on.

The settings fall in three groups:

* the grid: ``dims`` (None: the representation's own sizes — a fit's ``model.eval_dims``, `smec eval`'s
  :data:`AUTO_DIMS`), ``precisions`` (the first one's mean nDCG@10 over the dims is what fits select on);
* the evaluator (:meth:`EvaluationSpec.evaluator_settings`, the keyword arguments of
  :class:`smec.evaluation.evaluator.RetrievalEvaluator`): search depth ``k``, metric cut-offs, the calibration
  sample (``calibration_size`` corpus rows, seeded by ``seed``; it also fits PCA, the rotation, OPQ + PQ and the
  codes), int and binary scoring, the float search backend, the policy for queries without a relevant document;
* the training-free rivals: OPQ + PQ (``pq``, ``pq_max_bits``) and the codes of :mod:`smec.evaluation.codes`
  (``codes``; empty by default). The codes run in the baselines' grid, `smec eval` and the comparison's test
  grid, not in a fit's dev callback (their fits cost seconds to minutes per row; dev selection needs none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from smec.evaluation.errors import EvaluationError
from smec.evaluation.metrics import NO_RELEVANT_POLICIES

if TYPE_CHECKING:
    from smec.evaluation.codes.base import Code
    from smec.evaluation.evaluator import RetrievalEvaluator

__all__ = [
    "AUTO_DIMS",
    "BINARY_THRESHOLDS",
    "INT_SCORINGS",
    "PRECISIONS",
    "SEARCH_BACKENDS",
    "CodeSpec",
    "EvaluationSpec",
    "check_evaluator_settings",
]

# The vocabulary of the settings, declared here so that reading a spec (`smec eval --help`, a recipe) does not
# import faiss and torch; quantize.py and search.py take their names from here.
PRECISIONS = ("float32", "int8", "int4", "binary")
BINARY_THRESHOLDS = ("median", "sign")
SEARCH_BACKENDS = ("auto", "faiss", "torch")

AUTO_DIMS = (32, 64, 128, 256)
"""`smec eval`'s grid when no dims are given (those wider than the input are left out, with one warning)."""

INT_SCORINGS = ("symmetric", "asymmetric")

EVALUATOR_FIELDS = (
    "k",
    "ndcg_at",
    "recall_at",
    "mrr_at",
    "calibration_size",
    "seed",
    "int_scoring",
    "binary_threshold",
    "binary_rescore",
    "backend",
    "no_relevant",
)
"""The spec's fields that configure a :class:`~smec.evaluation.evaluator.RetrievalEvaluator`."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_of(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise EvaluationError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_evaluator_settings(
    *,
    k: int,
    ndcg_at: int,
    recall_at: int | None,
    mrr_at: int,
    calibration_size: int | None,
    seed: int,
    int_scoring: str,
    binary_threshold: str,
    binary_rescore: int | None,
    backend: str,
    no_relevant: str,
) -> None:
    """Raise one EvaluationError naming the first unusable evaluator setting (see :class:`EvaluationSpec`)."""
    if not _is_int(k) or k < 1:
        raise EvaluationError(f"k must be a positive integer, got {k!r}")
    for name, cut in (
        ("ndcg_at", ndcg_at),
        ("recall_at", k if recall_at is None else recall_at),
        ("mrr_at", mrr_at),
    ):
        if not _is_int(cut) or not 1 <= cut <= k:
            raise EvaluationError(f"{name} must be between 1 and k={k}, got {cut!r}")
    if calibration_size is not None and (not _is_int(calibration_size) or calibration_size < 1):
        raise EvaluationError(
            f"calibration_size must be a positive integer or null, got {calibration_size!r}"
        )
    if not _is_int(seed) or seed < 0:
        raise EvaluationError(f"seed must be an integer >= 0, got {seed!r}")
    _one_of("int_scoring", int_scoring, INT_SCORINGS)
    _one_of("binary_threshold", binary_threshold, BINARY_THRESHOLDS)
    if binary_rescore is not None and (not _is_int(binary_rescore) or binary_rescore < k):
        raise EvaluationError(
            f"binary_rescore must be >= k={k} (a shortlist to re-rank), got {binary_rescore!r}"
        )
    if backend not in SEARCH_BACKENDS:
        raise EvaluationError(f"unknown search backend {backend!r}: expected one of {list(SEARCH_BACKENDS)}")
    _one_of("no_relevant", no_relevant, NO_RELEVANT_POLICIES)


@dataclass(frozen=True)
class CodeSpec:
    """One code of :mod:`smec.evaluation.codes` for the grid: its registered ``name``, constructor ``params`` and
    where the grid runs it.

    E.g. ``CodeSpec("rabitq2", {"qb": 8, "rescore": 200})``; :meth:`build` makes the code
    (:func:`smec.evaluation.codes.make_code`), which :func:`smec.evaluation.codes.grid.code_rows` runs on top of
    each method's output at the dims :func:`smec.evaluation.codes.dim_for_budget` gives for each budget.

    Args:
        name, params: the code (``params`` e.g. ``rescore: 200`` for rescoring, ``m: 48`` for RQ).
        budgets: bytes per vector it runs at; None = every budget the grid's dims x precisions reach at
            :data:`smec.evaluation.codes.grid.CODE_MIN_COMPRESSION` or more.
        max_dim: the widest input it is given (None: the method's output width), e.g. to keep RQ's fit cheap.
        methods: the methods of a grid it runs on (None: every one; the training-free grid runs codes on
            ``concat`` and ``pca`` only).
        label: the rows' ``precision`` (default: ``name``, with ``+rescore<N>`` when rescoring); two entries of
            one spec need distinct labels.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    budgets: tuple[int, ...] | None = None
    max_dim: int | None = None
    methods: tuple[str, ...] | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        from smec.evaluation.codes import CODES, require_code

        if self.name not in CODES:
            raise EvaluationError(f"codes: unknown code {self.name!r}: expected one of {sorted(CODES)}")
        try:  # a faiss without the code's index: said when the spec is read, before any grid runs
            require_code(self.name)
        except EvaluationError as exc:
            raise EvaluationError(f"codes: {exc}") from None
        if not isinstance(self.params, Mapping) or not all(isinstance(k, str) for k in self.params):
            raise EvaluationError(
                f"codes: {self.name}: params must be a mapping of names, got {self.params!r}"
            )
        object.__setattr__(self, "params", dict(self.params))
        if self.budgets is not None:
            ok = isinstance(self.budgets, Sequence) and not isinstance(self.budgets, str)
            if not ok or not self.budgets or not all(_is_int(b) and b >= 1 for b in self.budgets):
                raise EvaluationError(
                    f"codes: {self.name}: budgets must be a list of positive byte counts, got {self.budgets!r}"
                )
            object.__setattr__(self, "budgets", tuple(sorted({int(b) for b in self.budgets})))
        if self.max_dim is not None and (not _is_int(self.max_dim) or self.max_dim < 1):
            raise EvaluationError(
                f"codes: {self.name}: max_dim must be a positive integer, got {self.max_dim!r}"
            )
        if self.methods is not None:
            methods = self.methods
            if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
                raise EvaluationError(
                    f"codes: {self.name}: methods must be a list of method names, got {methods!r}"
                )
            object.__setattr__(self, "methods", tuple(str(m) for m in methods))
        if self.label is not None and (not isinstance(self.label, str) or not self.label):
            raise EvaluationError(f"codes: {self.name}: label must be a non-empty string, got {self.label!r}")

    @property
    def precision(self) -> str:
        """The rows' ``precision``: ``label``, else the name (``+rescore<N>`` when rescoring)."""
        if self.label is not None:
            return self.label
        rescore = self.params.get("rescore")
        return self.name if rescore is None else f"{self.name}+rescore{rescore}"

    def runs_on(self, method: str) -> bool:
        """Whether this code runs on ``method``'s output (``methods`` None: on every method)."""
        return self.methods is None or method in self.methods

    def build(self) -> Code:
        from smec.evaluation.codes import make_code

        return make_code(self.name, **self.params)

    def to_dict(self) -> dict[str, Any]:
        """The plain form a recipe or a JSON signature holds (unset settings left out)."""
        out: dict[str, Any] = {"name": self.name, "params": dict(self.params)}
        for key in CODE_SPEC_OPTIONS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


CODE_SPEC_OPTIONS = ("budgets", "max_dim", "methods", "label")
"""The keys of a ``codes:`` entry besides ``name`` and ``params``."""


@dataclass(frozen=True)
class EvaluationSpec:
    """Every setting of one evaluation: the grid, the evaluator and the training-free rivals (module docstring).

    Args:
        dims: sizes to evaluate, ascending and distinct (stored sorted); None = the representation's own sizes.
        precisions: among float32, int8, int4, binary (in this order of preference: the first is the one fits
            select on).
        k: search depth (TREC run files hold the top k). ndcg_at, recall_at (None = k), mrr_at: metric cut-offs.
        calibration_size: corpus rows (a seeded sample) that fit the quantisers, PCA, the rotation, OPQ + PQ and
            the codes; None = the whole corpus. seed: the sample's (and the rotation's, OPQ's) seed.
        int_scoring: int8 / int4 with quantised queries (``symmetric``) or float queries (``asymmetric``).
        binary_threshold: ``median`` (per-dimension corpus median) or ``sign``.
        binary_rescore: Hamming shortlist re-ranked by float inner product (None: pure Hamming).
        backend: float search, ``auto`` / ``faiss`` / ``torch``.
        no_relevant: judged queries without a relevant document score ``zero`` (pytrec_eval) or are ``skip``-ped.
        pq, pq_max_bits: OPQ + PQ at the int8 budget of each dim, up to ``pq_max_bits`` bits (None: every dim).
        codes: code rivals for the grid (:class:`CodeSpec`), on top of each method's output; empty by default.
    """

    dims: tuple[int, ...] | None = None
    precisions: tuple[str, ...] = PRECISIONS
    k: int = 100
    ndcg_at: int = 10
    recall_at: int | None = None
    mrr_at: int = 10
    calibration_size: int | None = 10_000
    seed: int = 0
    int_scoring: str = "symmetric"
    binary_threshold: str = "median"
    binary_rescore: int | None = None
    backend: str = "auto"
    no_relevant: str = "zero"
    pq: bool = True
    pq_max_bits: int | None = 1024
    codes: tuple[CodeSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.dims is not None:
            dims = self.dims
            ok = (
                isinstance(dims, Sequence)
                and not isinstance(dims, str)
                and all(_is_int(d) and d >= 1 for d in dims)
            )
            if not ok or not dims or len(set(dims)) != len(dims):
                raise EvaluationError(f"dims must be a list of distinct positive integers, got {dims!r}")
            object.__setattr__(self, "dims", tuple(sorted(int(d) for d in dims)))
        precisions = (self.precisions,) if isinstance(self.precisions, str) else tuple(self.precisions)
        if (
            not precisions
            or len(set(precisions)) != len(precisions)
            or not set(precisions) <= set(PRECISIONS)
        ):
            raise EvaluationError(
                f"precisions must be distinct values among {', '.join(PRECISIONS)}, got {list(precisions)}"
            )
        object.__setattr__(self, "precisions", precisions)
        check_evaluator_settings(**self.evaluator_settings())
        if not isinstance(self.pq, bool):
            raise EvaluationError(f"pq must be true or false, got {self.pq!r}")
        if self.pq_max_bits is not None and (not _is_int(self.pq_max_bits) or self.pq_max_bits < 8):
            raise EvaluationError(f"pq_max_bits must be an integer >= 8 or null, got {self.pq_max_bits!r}")
        if isinstance(self.codes, (str, Mapping)) or not isinstance(self.codes, Sequence):
            raise EvaluationError(f"codes must be a list of {{name, params}} entries, got {self.codes!r}")
        codes = tuple(_code_spec(c) for c in self.codes)
        labels = [c.precision for c in codes]
        twice = sorted({p for p in labels if labels.count(p) > 1})
        if twice:
            raise EvaluationError(f"codes: two entries make rows labelled {twice}: give them distinct labels")
        object.__setattr__(self, "codes", codes)

    def evaluator_settings(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~smec.evaluation.evaluator.RetrievalEvaluator` this spec sets."""
        return {name: getattr(self, name) for name in EVALUATOR_FIELDS}

    def evaluator(
        self,
        qrels: Mapping[str, Mapping[str, int]],
        query_ids: Sequence[str],
        corpus_ids: Sequence[str],
        input_dim: int,
    ) -> RetrievalEvaluator:
        """The evaluator of one split with this spec's settings (``input_dim``: the float32 input's width)."""
        from smec.evaluation.evaluator import RetrievalEvaluator

        return RetrievalEvaluator(
            qrels, query_ids, corpus_ids, input_dim=input_dim, **self.evaluator_settings()
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, dicts, None): for JSON signatures and the `smec fit` command line."""
        out = asdict(self)
        out["dims"] = None if self.dims is None else list(self.dims)
        out["precisions"] = list(self.precisions)
        out["codes"] = [c.to_dict() for c in self.codes]
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _code_spec(value: Any) -> CodeSpec:
    if isinstance(value, CodeSpec):
        return value
    if callable(getattr(value, "as_dict", None)):  # jsonargparse's Namespace: `smec fit --evaluation '{...}'`
        value = value.as_dict()
    if (
        not isinstance(value, Mapping)
        or "name" not in value
        or not set(value) <= {"name", "params", *CODE_SPEC_OPTIONS}
    ):
        raise EvaluationError(
            f"codes: expected entries {{name: <code>, params: {{...}}}} (optional: {', '.join(CODE_SPEC_OPTIONS)}),"
            f" got {value!r}"
        )
    options = {k: value[k] for k in CODE_SPEC_OPTIONS if value.get(k) is not None}
    return CodeSpec(value["name"], dict(value.get("params") or {}), **options)


DEFAULT_SPEC = EvaluationSpec()
"""The defaults every entry point starts from (`smec eval`'s options, experiments, `smec fit`)."""
