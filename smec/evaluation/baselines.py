"""Training-free baselines: truncation, PCA, random rotation, OPQ + PQ, and the grid that runs them all.

Each baseline is fitted on a corpus sample only (never on queries) and maps (n, D) float vectors to (n, d)
float32 vectors whose *prefixes* the evaluator then normalises, quantises and searches — except OPQ + PQ,
which has its own asymmetric search and produces rows with precision ``"pq"`` directly.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from smec.evaluation.codes.grid import code_rows, grid_budgets
from smec.evaluation.errors import FAISS_MIN_POINTS_PER_CENTROID, EvaluationError, SmallSampleWarning
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.grid import evaluate_grid, note_dropped
from smec.evaluation.quantize import l2_normalize
from smec.evaluation.spec import DEFAULT_SPEC, EvaluationSpec
from smec.sampling import sample_rows

__all__ = ["FAISS_MIN_POINTS_PER_CENTROID", "SmallSampleWarning"]  # re-exported: they began here


def _as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise EvaluationError(f"{what} must be a non-empty 2-d array (n, dim), got shape {x.shape}")
    return x


class Truncation:
    """Identity: the evaluator's prefix ``x[:, :d]`` *is* truncation. ``fit`` is a no-op."""

    def fit(self, corpus_sample: np.ndarray) -> Truncation:
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, D) -> (n, D) float32, unchanged."""
        return np.asarray(x, dtype=np.float32)


class PCA:
    """Principal components of the input, fitted on a corpus sample.

    ``transform(x) = (x - mean) @ components.T`` with components ordered by decreasing variance, so every
    prefix is the best linear subspace of its size. Each component's sign is fixed (largest |entry| positive)
    so fits are reproducible.

    Args:
        n_components: output dims (default: all, ``min(n_samples, D)``).
    Attributes (after fit): ``mean`` (D,), ``components`` (d, D), ``explained_variance_ratio`` (d,).
    """

    def __init__(self, n_components: int | None = None) -> None:
        self.n_components = n_components

    def fit(self, corpus_sample: np.ndarray) -> PCA:
        x = _as_matrix(corpus_sample, "corpus_sample").astype(np.float64)
        n, dim = x.shape
        d = min(n, dim) if self.n_components is None else self.n_components
        if not 1 <= d <= min(n, dim):
            raise EvaluationError(
                f"PCA n_components must be in [1, {min(n, dim)}] for a {x.shape} sample, got {d}"
            )
        self.mean = x.mean(axis=0)
        centred = x - self.mean
        # Eigen-decomposition of the D x D covariance: cheaper than an SVD of the n x D sample when n >> D.
        cov = centred.T @ centred / max(n - 1, 1)
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1][:d]
        comps = eigvec[:, order].T
        comps *= np.sign(comps[np.arange(d), np.abs(comps).argmax(axis=1)])[:, None]
        self.components = comps.astype(np.float32)
        total = eigval.clip(min=0).sum()
        self.explained_variance_ratio = eigval[order].clip(min=0) / total if total > 0 else np.zeros(d)
        self.mean = self.mean.astype(np.float32)
        return self

    def leading(self, d: int) -> PCA:
        """The fit's first ``d`` components as a PCA of its own (exactly what a fit with ``n_components=d``
        gives: the components do not depend on how many are kept)."""
        if not hasattr(self, "components"):
            raise EvaluationError("PCA is not fitted: call fit(corpus_sample) first")
        if not 1 <= d <= len(self.components):
            raise EvaluationError(f"PCA.leading: d must be in [1, {len(self.components)}], got {d}")
        out = PCA(n_components=d)
        out.mean, out.components = self.mean, self.components[:d]
        out.explained_variance_ratio = self.explained_variance_ratio[:d]
        return out

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, D) -> (n, d) float32 projections onto the components."""
        if not hasattr(self, "components"):
            raise EvaluationError("PCA is not fitted: call fit(corpus_sample) first")
        return (np.asarray(x, dtype=np.float32) - self.mean) @ self.components.T


class RandomRotation:
    """A seeded random orthogonal matrix (Haar: QR of a Gaussian, signs fixed).

    A no-training baseline for binary codes: a prefix of the rotated vector is a random orthogonal projection
    (LSH-like after thresholding).

    Args:
        out_dim: output dims (default D); seed: RNG seed.
    """

    def __init__(self, out_dim: int | None = None, seed: int = 0) -> None:
        self.out_dim = out_dim
        self.seed = seed

    def fit(self, corpus_sample: np.ndarray) -> RandomRotation:
        """Only the input width of ``corpus_sample`` is used."""
        dim = _as_matrix(corpus_sample, "corpus_sample").shape[1]
        out = dim if self.out_dim is None else self.out_dim
        if not 1 <= out <= dim:
            raise EvaluationError(f"RandomRotation out_dim must be in [1, {dim}], got {out}")
        g = np.random.default_rng(self.seed).standard_normal((dim, dim))
        q, r = np.linalg.qr(g)
        q *= np.sign(np.diag(r))[None, :]
        self.matrix = q[:, :out].astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, D) -> (n, out_dim) float32, ``x @ matrix``."""
        if not hasattr(self, "matrix"):
            raise EvaluationError("RandomRotation is not fitted: call fit(corpus_sample) first")
        return np.asarray(x, dtype=np.float32) @ self.matrix


class OPQProductQuantizer:
    """faiss OPQ rotation + product quantiser at a fixed code budget, searched asymmetrically.

    ``bits`` per vector = ``M * 8``: M sub-quantisers of 256 centroids each. The L2-normalised input (D dims)
    is mapped by a learned OPQ matrix to ``opq_dim`` dims (faiss ``OPQ{M}_{opq_dim},PQ{M}``) and
    product-quantised; queries stay float and are scored against the PQ reconstructions by inner product (ADC
    look-up tables).

    Args:
        bits: code size per vector, a positive multiple of 8.
        opq: learn the OPQ matrix (default True); False = plain PQ on the input (zero-padded to a multiple of
            M).
        opq_dim: OPQ output width, a multiple of M; default ``min(4 M, max(M, 512), D)`` rounded down to a
            multiple of M — faiss's usual 4 dims per sub-quantiser, capped at 512 because every OPQ iteration
            costs an SVD of a D x opq_dim matrix (at 4096 bits that means 1-d sub-quantisers over 512 rotated
            dims).
        opq_iters: OPQ alternations (faiss default 50; 4 here for CPU cost), pq_iters: k-means iterations
            (faiss default 25). On 2 busy cores a 10k-vector fit of 1536-d input took ~30 s at 256 bits and
            ~90 s at 1024 bits with 5 / 20 iterations; at 4096 bits even plain PQ took ~50 s.
        seed: k-means seed.
    """

    def __init__(
        self,
        bits: int,
        *,
        opq: bool = True,
        opq_dim: int | None = None,
        opq_iters: int = 4,
        pq_iters: int = 10,
        seed: int = 0,
    ) -> None:
        if bits <= 0 or bits % 8:
            raise EvaluationError(f"OPQ+PQ bits must be a positive multiple of 8, got {bits}")
        self.bits = bits
        self.m = bits // 8
        self.opq = opq
        self.opq_dim = opq_dim
        self.opq_iters = opq_iters
        self.pq_iters = pq_iters
        self.seed = seed
        self.index: faiss.Index | None = None

    def fit(self, corpus_sample: np.ndarray) -> OPQProductQuantizer:
        """Train the OPQ matrix and the PQ codebooks on ``corpus_sample`` (n >= 256, D) float."""
        x = l2_normalize(_as_matrix(corpus_sample, "corpus_sample"))
        dim, m = x.shape[1], self.m
        if m > dim:
            raise EvaluationError(f"OPQ+PQ with {self.bits} bits needs {m} sub-quantisers > input dim {dim}")
        if x.shape[0] < 256:
            raise EvaluationError(
                f"OPQ+PQ needs at least 256 training vectors (256 centroids), got {x.shape[0]}"
            )
        if self.opq:
            width = self.opq_dim if self.opq_dim is not None else min(4 * m, max(m, 512), dim) // m * m
            if width % m or not m <= width <= dim:
                raise EvaluationError(f"opq_dim must be a multiple of M={m} in [{m}, {dim}], got {width}")
            transform = faiss.OPQMatrix(dim, m, width)
            transform.niter = self.opq_iters
            transform.niter_pq_0 = self.pq_iters
            # OPQ's own PQ (the one it would build itself), with faiss's small-sample warning off (see below).
            transform.pq = faiss.ProductQuantizer(width, m, 8)
            transform.pq.cp.min_points_per_centroid = 1
            self._opq_pq = transform.pq
        else:
            width = -(-dim // m) * m
            transform = faiss.RemapDimensionsTransform(dim, width, True) if width != dim else None
        pq = faiss.IndexPQ(width, m, 8, faiss.METRIC_INNER_PRODUCT)
        pq.pq.cp.niter = self.pq_iters
        pq.pq.cp.seed = self.seed
        # faiss prints "please provide at least 39 x 256 training points" once per sub-quantiser and OPQ
        # iteration (1,120 lines for one demo grid); the threshold only gates that print, so the fit is the
        # same. The grid says it once instead (SmallSampleWarning).
        pq.pq.cp.min_points_per_centroid = 1
        index = pq if transform is None else faiss.IndexPreTransform(transform, pq)
        start = time.perf_counter()
        index.train(x)
        self.fit_time_s = time.perf_counter() - start
        self._parts = (transform, pq)  # the pre-transform index does not own them: keep them alive
        self.index = index
        return self

    def search(self, queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Encode ``corpus`` (nc, D), search ``queries`` (nq, D): (nq, k) float32 scores and int64 rows."""
        if self.index is None:
            raise EvaluationError("OPQProductQuantizer is not fitted: call fit(corpus_sample) first")
        self.index.reset()
        self.index.add(l2_normalize(corpus))
        scores, idx = self.index.search(l2_normalize(queries), min(k, len(corpus)))
        self.index.reset()
        return scores, idx.astype(np.int64)

    def evaluate(
        self,
        evaluator: RetrievalEvaluator,
        queries: np.ndarray,
        corpus: np.ndarray,
        *,
        method: str = "opq-pq",
        run_dir: Path | None = None,
    ) -> dict[str, Any]:
        """One row (precision ``"pq"``, ``dim`` = M, ``bits`` = 8 M) through ``evaluator.score_ranking``;
        its ``time_s`` includes the fit."""
        start = time.perf_counter()
        scores, idx = self.search(queries, corpus, evaluator.k)
        return evaluator.score_ranking(
            method,
            self.m,
            "pq",
            self.bits,
            scores,
            idx,
            scoring="opq-adc" if self.opq else "pq-adc",
            run_dir=run_dir,
            elapsed=getattr(self, "fit_time_s", 0.0) + time.perf_counter() - start,
        )


def run_baselines(
    evaluator: RetrievalEvaluator,
    queries_by_model: Mapping[str, np.ndarray],
    corpus_by_model: Mapping[str, np.ndarray],
    concat_queries: np.ndarray,
    concat_corpus: np.ndarray,
    dims: Sequence[int],
    spec: EvaluationSpec = DEFAULT_SPEC,
    *,
    run_dir: Path | None = None,
    dropped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Run the whole training-free grid on one split.

    Rows, in this order:

    * ``model:<name>`` — each base model alone at every dim of ``dims`` below its width, plus its full width;
    * ``concat`` — the concatenation truncated to ``dims`` plus full width;
    * ``pca`` — PCA of the concatenation (fit on the spec's calibration sample of corpus rows) at ``dims``;
    * ``rotation`` — random rotation of the concatenation at ``dims`` (binary only, skipped without "binary");
    * ``opq-pq`` — OPQ + PQ at ``8 * dim`` bits (the int8 budget of that dim) for every dim with
      ``8 * dim <= spec.pq_max_bits`` (default 1024 bits, i.e. >= 48x for a 1536-d input: the regime where PQ
      is the strong baseline; larger budgets cost minutes of training each; None = all dims), if ``spec.pq``;
    * the spec's codes (``spec.codes``) on ``concat`` and ``pca`` (those each code names in ``methods``), at the
      grid's budgets (:func:`smec.evaluation.codes.grid.code_rows`): precision = the code's label, ``bits`` its
      true stored bytes x 8. For them PCA keeps every component the sample allows (a code at 96 bytes may take
      704 dims); the ``pca`` rows at ``dims`` are the same prefixes.

    Args:
        evaluator: built on the split's ids and qrels with ``input_dim`` = the concatenation's width.
        queries_by_model, corpus_by_model: per-model (nq, d_m) and (nc, d_m) float arrays.
        concat_queries, concat_corpus: (nq, D), (nc, D) float arrays.
        dims: target dims, each at most the concatenation's width (else an error). A single model narrower
            than a dim is evaluated at its full width instead, PCA stops at the fit sample's row count, and
            dims that are not a multiple of 8 get every precision but binary: what is left out this way is said
            in one :class:`~smec.evaluation.grid.GridWarning` (or appended to ``dropped``).
        spec: ``precisions`` (for every method except rotation, binary, and opq-pq, "pq"), the fit sample
            (``calibration_size``, ``seed``: it fits PCA and OPQ and seeds the rotation), ``pq``, ``pq_max_bits``.
        run_dir: if given, TREC run files for every row.
        dropped: collects what was left out instead of warning (a caller with more grids warns once).
    """
    dims = _check_baseline_inputs(queries_by_model, corpus_by_model, concat_corpus, dims)
    notes: list[str] = []
    rows: list[dict[str, Any]] = []

    def grid(method: str, q: np.ndarray, c: np.ndarray, method_dims: Sequence[int]) -> None:
        rows.extend(
            evaluate_grid(
                evaluator, method, q, c, method_dims, spec.precisions, run_dir=run_dir, dropped=notes
            )
        )

    for name in queries_by_model:
        c = np.asarray(corpus_by_model[name])
        grid(f"model:{name}", queries_by_model[name], c, _with_full(f"model:{name}", dims, c.shape[1], notes))
    grid("concat", concat_queries, concat_corpus, _with_full("concat", dims, concat_corpus.shape[1], notes))

    sample = concat_corpus[sample_rows(len(concat_corpus), spec.calibration_size, spec.seed)]
    small = [d for d in dims if d <= len(sample)]
    if len(small) < len(dims):
        notes.append(
            f"pca at dims {dims[len(small) :]} (more components than the {len(sample)} corpus rows that fit it)"
        )
    wide = _pca_rows(grid, concat_queries, concat_corpus, sample, small, spec)
    if "binary" in spec.precisions:
        rows += _rotation_rows(
            evaluator, concat_queries, concat_corpus, sample, dims, spec.seed, run_dir, notes
        )
    if spec.pq:
        rows += _pq_rows(evaluator, concat_queries, concat_corpus, sample, dims, spec, run_dir)
    if spec.codes:
        budgets = grid_budgets(dims, spec.precisions, evaluator.input_dim)
        reps = {"concat": (concat_queries, concat_corpus)}
        if wide is not None:
            reps["pca"] = (wide.transform(concat_queries), wide.transform(concat_corpus))
        for method, (q, c) in reps.items():
            rows += code_rows(evaluator, spec.codes, method, q, c, budgets, run_dir=run_dir, dropped=notes)
    note_dropped(notes, dropped)
    return rows


def _pca_rows(
    grid: Any,
    queries: np.ndarray,
    corpus: np.ndarray,
    sample: np.ndarray,
    small: Sequence[int],
    spec: EvaluationSpec,
) -> PCA | None:
    """The ``pca`` rows at ``small`` through ``grid``; returns the PCA with every component the sample allows
    when a code of the spec runs on PCA (its output is what the codes take), else None."""
    wide = None
    if any(c.runs_on("pca") for c in spec.codes):
        wide = PCA(n_components=min(len(sample), corpus.shape[1])).fit(sample)
    if small:
        pca = PCA(n_components=max(small)).fit(sample) if wide is None else wide.leading(max(small))
        grid("pca", pca.transform(queries), pca.transform(corpus), small)
    return wide


def _check_baseline_inputs(
    queries_by_model: Mapping[str, np.ndarray],
    corpus_by_model: Mapping[str, np.ndarray],
    concat_corpus: np.ndarray,
    dims: Sequence[int],
) -> list[int]:
    """The grid's dims, sorted and distinct; an error for models that do not match or dims wider than the input."""
    if set(queries_by_model) != set(corpus_by_model):
        raise EvaluationError(
            f"queries_by_model and corpus_by_model name different models: {sorted(queries_by_model)} vs "
            f"{sorted(corpus_by_model)}"
        )
    dims = sorted({int(d) for d in dims})
    width = concat_corpus.shape[1]
    wide = [d for d in dims if d > width]
    if wide:
        raise EvaluationError(
            f"dims {wide} are wider than the input: the base models concatenate to {width} dims"
        )
    return dims


def _with_full(method: str, dims: Sequence[int], width: int, notes: list[str]) -> list[int]:
    """The dims below ``width`` and ``width`` itself; the dims above it are noted as left out."""
    above = [d for d in dims if d > width]
    if above:
        notes.append(f"{method} at dims {above} (wider than its {width} dims; its full width is evaluated)")
    return [d for d in dims if d < width] + [width]


def _rotation_rows(
    evaluator: RetrievalEvaluator,
    queries: np.ndarray,
    corpus: np.ndarray,
    sample: np.ndarray,
    dims: Sequence[int],
    seed: int,
    run_dir: Path | None,
    notes: list[str],
) -> list[dict[str, Any]]:
    """The random rotation's binary rows at the dims that are whole bytes."""
    rot = RandomRotation(seed=seed).fit(sample)
    rot_dims = [d for d in dims if d % 8 == 0]
    if len(rot_dims) < len(dims):
        notes.append(
            f"rotation at dims {[d for d in dims if d % 8]} (a binary-only baseline; binary codes need a "
            "multiple of 8 dims)"
        )
    if not rot_dims:
        return []
    return evaluator.evaluate(
        "rotation", rot.transform(queries), rot.transform(corpus), rot_dims, ("binary",), run_dir=run_dir
    )


def _pq_rows(
    evaluator: RetrievalEvaluator,
    queries: np.ndarray,
    corpus: np.ndarray,
    sample: np.ndarray,
    dims: Sequence[int],
    spec: EvaluationSpec,
    run_dir: Path | None,
) -> list[dict[str, Any]]:
    """OPQ + PQ at the int8 budget of each dim up to ``spec.pq_max_bits``.

    Budgets above ``pq_max_bits`` are not a drop: that setting bounds the (slow) OPQ + PQ fits on purpose.
    """
    rows = []
    budgets = [d for d in dims if spec.pq_max_bits is None or 8 * d <= spec.pq_max_bits]
    if budgets and len(sample) < FAISS_MIN_POINTS_PER_CENTROID * 256:
        warnings.warn(
            f"OPQ trained on {len(sample):,} rows; faiss recommends >= {FAISS_MIN_POINTS_PER_CENTROID * 256:,}",
            SmallSampleWarning,
            stacklevel=3,
        )
    for d in dims:
        if spec.pq_max_bits is None or 8 * d <= spec.pq_max_bits:
            quantizer = OPQProductQuantizer(8 * d, seed=spec.seed).fit(sample)
            rows.append(quantizer.evaluate(evaluator, queries, corpus, run_dir=run_dir))
    return rows
