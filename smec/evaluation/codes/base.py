"""The interface every compressed code shares: fit on a corpus sample, index a corpus, search, count bytes.

A code maps (n, d) float32 vectors (L2-normalised by the caller, as the evaluator does for every prefix) to
``bytes_per_vector`` bytes each and ranks the indexed corpus for each query, higher score = better:

    code = ITQBinary().fit(corpus_sample)      # calibration on corpus rows only, never on queries
    code.index(corpus)                         # encodes and stores the corpus
    scores, indices = code.search(queries, k)  # (nq, k) float32, (nq, k) int64 rows of ``corpus``

``bytes_per_vector`` is what one corpus vector really costs on disk, per-vector factors included (RaBitQ stores
two or five float32 per vector); the code's own parameters (rotations, ranges, codebooks: one copy for the
whole corpus) are not counted, as for the evaluator's int8/binary rows. ``encode(x)`` returns exactly that many
bytes per row, and the tests check the count against faiss's own ``sa_code_size()``.

Rescoring (``rescore=N``): the code shortlists N candidates per query, which are re-ranked by the exact inner
product with the float32 vectors given to ``index``. Keeping those costs ``extra_bytes_per_vector = 4 d`` more
(on disk, read only for the shortlist); it is reported on its own and never folded into ``bytes_per_vector``,
so the compression factor ``32 * input_dim / (8 * bytes_per_vector)`` is the code's alone.

Search order: by score descending, equal scores by corpus row ascending (the evaluator's tie rule; Hamming codes
get it exactly at the k-th position through ``search_hamming``, float-scored codes only within the k they
return, where ties are rare).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import faiss
import numpy as np

from smec.evaluation.errors import EvaluationError
from smec.evaluation.quantize import _as_float32
from smec.evaluation.search import rescore as rescore_shortlist

# The oldest faiss with every code of this package (multi-bit RaBitQ arrived in 1.13.1, RaBitQ's `centered`
# query quantiser in 1.13.0); pyproject.toml pins faiss-cpu / faiss-gpu to at least this.
FAISS_FLOOR = (1, 13, 1)


def faiss_version() -> tuple[int, ...]:
    """The installed faiss as a tuple of ints (``"1.13.1"`` -> (1, 13, 1); suffixes like ``.post1`` dropped)."""
    parts = []
    for part in str(faiss.__version__).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def require_faiss(code: str, minimum: tuple[int, ...], what: str) -> None:
    """Raise one EvaluationError naming ``code`` and the faiss it needs when the installed faiss is older."""
    if faiss_version() < minimum:
        need = ".".join(map(str, minimum))
        raise EvaluationError(
            f"code {code!r} needs faiss >= {need} ({what}); this is faiss {faiss.__version__}: "
            f"pip install 'faiss-cpu>={need}'"
        )


@contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run the block with faiss's OpenMP pool at ``n`` threads, restoring the previous count after."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def sorted_by_score(scores: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by score descending, ties by index ascending; -1 slots (faiss: fewer hits) go last."""
    scores = np.asarray(scores, dtype=np.float32)
    indices = np.asarray(indices, dtype=np.int64)
    scores = np.where(indices < 0, -np.inf, scores).astype(np.float32)
    order = np.lexsort((np.where(indices < 0, np.iinfo(np.int64).max, indices), -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1)


class Code:
    """Base class: validation, rescoring and byte accounting; subclasses implement the ``_``-methods.

    Args:
        rescore: shortlist size N for rescoring with the float vectors (None: the code's own scores).
        seed: seed of every random choice of the fit (rotations, initialisations); same seed, same rows ->
            identical codes.
    Class attributes of each code: ``family`` ("binary", "rabitq", "scalar", "additive") and ``symmetric``
    (True: queries are encoded like the corpus and scored code against code; False: the query stays float or
    is quantised more finely than the corpus — asymmetric).
    """

    family: ClassVar[str] = ""
    symmetric: ClassVar[bool] = False

    def __init__(self, *, rescore: int | None = None, seed: int = 0) -> None:
        if rescore is not None and (isinstance(rescore, bool) or int(rescore) != rescore or rescore < 1):
            raise EvaluationError(
                f"{self.name}: rescore must be a positive shortlist size or None, got {rescore!r}"
            )
        self.rescore = None if rescore is None else int(rescore)
        self.seed = int(seed)
        self.dim: int | None = None
        self._corpus: np.ndarray | None = None
        self._n_indexed = 0

    # ---------------------------------------------------------------- what subclasses provide
    @property
    def name(self) -> str:
        """Short label used as the row's precision, e.g. ``"itq"``, ``"rabitq2"``, ``"sq4-optim"``."""
        raise NotImplementedError

    def bytes_for_dim(self, dim: int) -> int:
        """Bytes one vector of width ``dim`` costs with this code's settings (before or after fit)."""
        raise NotImplementedError

    def for_budget(self, budget_bytes: int) -> Code | None:
        """The code a grid runs in a budget of ``budget_bytes``: this one, whose bytes follow its input width
        (the grid then picks the widest input that fits). A code sized by a parameter of its own instead (RQ /
        LSQ with ``m=None``: M codebooks = the budget's bytes) returns a copy sized to the budget, or None when
        no size fits."""
        return self

    def _scoring(self) -> str:
        raise NotImplementedError

    def _fit(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _encode(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _add(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _check_dim(self, dim: int) -> None:
        """Raise EvaluationError if the code cannot take ``dim``-wide input (default: any width)."""

    # ---------------------------------------------------------------- the interface
    @property
    def scoring(self) -> str:
        """How rows are scored, e.g. ``"itq-hamming"``, ``"rabitq-qb8"``, with ``"+rescore<N>"`` if rescoring."""
        base = self._scoring()
        return base if self.rescore is None else f"{base}+rescore{self.rescore}"

    @property
    def bytes_per_vector(self) -> int:
        """True stored bytes of one corpus vector (per-vector factors included); needs ``fit``."""
        return self.bytes_for_dim(self._fitted_dim())

    @property
    def extra_bytes_per_vector(self) -> int:
        """Bytes the rescoring step needs on top of the code: the float32 vector (4 d), or 0 without it."""
        return 0 if self.rescore is None else 4 * self._fitted_dim()

    def describe(self) -> dict[str, Any]:
        """The fields a result row needs: name, family, scoring, symmetric, bytes, extra_bytes, rescore."""
        return {
            "code": self.name,
            "family": self.family,
            "scoring": self.scoring,
            "symmetric": self.symmetric,
            "bytes": self.bytes_per_vector,
            "extra_bytes": self.extra_bytes_per_vector,
            "rescore": self.rescore,
        }

    def fit(self, corpus_sample: np.ndarray) -> Code:
        """Calibrate on ``corpus_sample`` (n, d) float (corpus rows only, L2-normalised by the caller)."""
        x = _as_float32(corpus_sample, f"{self.name} corpus_sample")
        self._check_dim(x.shape[1])
        self._fit(x)
        self.dim = x.shape[1]
        self._corpus, self._n_indexed = None, 0
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) float -> (n, bytes_per_vector) uint8: what would be stored for these vectors."""
        codes = self._encode(self._check_width(x, "x"))
        return np.ascontiguousarray(codes, dtype=np.uint8)

    def index(self, corpus: np.ndarray) -> Code:
        """Encode and store ``corpus`` (nc, d) float, replacing whatever was indexed before."""
        x = self._check_width(corpus, "corpus")
        self._add(x)
        self._n_indexed = x.shape[0]
        self._corpus = x if self.rescore is not None else None
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` corpus rows per query: scores (nq, k) float32 (higher = better), indices (nq, k) int64.

        k is clipped to the corpus size. With ``rescore=N`` the code's top N are re-ranked by the float inner
        product (N must be >= k)."""
        q = self._check_width(queries, "queries")
        if self._n_indexed == 0:
            raise EvaluationError(f"{self.name}: nothing indexed: call index(corpus) before search")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise EvaluationError(f"{self.name}: k must be a positive integer, got {k!r}")
        k = min(int(k), self._n_indexed)
        if self.rescore is None:
            return self._search(q, k)
        if self.rescore < k:
            raise EvaluationError(f"{self.name}: rescore shortlist {self.rescore} is shorter than k={k}")
        _, shortlist = self._search(q, min(self.rescore, self._n_indexed))
        return rescore_shortlist(q, self._corpus, shortlist, k)

    # ---------------------------------------------------------------- helpers
    def _fitted_dim(self) -> int:
        if self.dim is None:
            raise EvaluationError(f"{self.name} is not fitted: call fit(corpus_sample) first")
        return self.dim

    def _check_width(self, x: np.ndarray, what: str) -> np.ndarray:
        dim = self._fitted_dim()
        x = _as_float32(x, f"{self.name} {what}")
        if x.shape[1] != dim:
            raise EvaluationError(
                f"{self.name}: {what} has {x.shape[1]} dims but the code was fitted on {dim}"
            )
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, scoring={self.scoring})"
