"""Exact top-k search: inner product (faiss IndexFlatIP or torch matmul + topk), Hamming (IndexBinaryFlat).

Tie rule, identical for every backend: results are sorted by score descending (Hamming distance ascending),
and equal scores are ordered by corpus row ascending — also at the k-th position, so *which* tied documents
make the top k is deterministic. faiss and ``torch.topk`` do not guarantee this themselves, so every search
asks for k + 1 results; a query whose (k+1)-th result ties with its k-th is recomputed exactly (inner product:
the torch path, which selects tied documents at the boundary in row order; Hamming: one faiss range search).
For float data this almost never happens; for short binary codes it is common.

Speed note: torch and faiss each ship their own OpenMP runtime. On a small, busy machine their spinning worker
threads slow each other down (a faiss search right after torch work took 1.2 s instead of 0.05 s on 2 cores);
exporting ``OMP_WAIT_POLICY=PASSIVE`` before Python starts removes the penalty.

If k exceeds the corpus size, k is clipped to it.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from smec.evaluation.errors import EvaluationError
from smec.evaluation.spec import SEARCH_BACKENDS

# The automatic rule on CPU, refitted from experiments/bench/search_backend.py (its table is in the README,
# "Search backend"): torch matmul + topk from TORCH_MIN_DIM dims on any corpus, and at every dim from
# TORCH_MIN_CORPUS rows; faiss IndexFlatIP below both (narrow codes on small corpora). The evaluator searches
# chunks of at most 65,536 rows, so one call never sees more. Measured on the 2-core machine shared by several
# jobs, 200 queries, k = 100: torch 3-9x faster from 128 dims on a 65,536-row chunk (256-d: 0.39 s vs 3.0 s),
# 1.4x at 32 dims; on 2,048 rows faiss is faster at 32 dims (0.021 s vs 0.029 s).
TORCH_MIN_DIM = 40
TORCH_MIN_CORPUS = 16_384
# Upper bound on the (chunk, n_corpus) float32 score block the torch path materialises.
MAX_CHUNK_BYTES = 256 * 2**20


def faiss_gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def choose_backend(dim: int, n_corpus: int, backend: str = "auto") -> str:
    """Resolve ``"auto"``: faiss when it has a GPU; on CPU torch from TORCH_MIN_DIM dims or from
    TORCH_MIN_CORPUS rows (the measured rule above), else faiss."""
    if backend not in SEARCH_BACKENDS:
        raise EvaluationError(f"unknown search backend {backend!r}: expected one of {list(SEARCH_BACKENDS)}")
    if backend != "auto":
        return backend
    if faiss_gpu_available():
        return "faiss"
    return "torch" if dim >= TORCH_MIN_DIM or n_corpus >= TORCH_MIN_CORPUS else "faiss"


def _check_pair(queries: np.ndarray, corpus: np.ndarray, k: int) -> int:
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise EvaluationError(
            f"queries and corpus must be 2-d with the same width, got {queries.shape} and {corpus.shape}"
        )
    if corpus.shape[0] == 0:
        raise EvaluationError("cannot search an empty corpus")
    if k < 1:
        raise EvaluationError(f"k must be >= 1, got {k}")
    return min(int(k), corpus.shape[0])


def _order_ties_by_row(values: torch.Tensor, indices: torch.Tensor, descending: bool = True):
    """Sort each row by value (desc), ties by index ascending: index sort, then a stable value sort."""
    indices, pos = indices.sort(dim=1)
    values = values.gather(1, pos)
    values, pos = values.sort(dim=1, descending=descending, stable=True)
    return values, indices.gather(1, pos)


def _exact_topk_block(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top k of each row of a full (n, n_corpus) score block under the tie rule (k <= n_corpus)."""
    n_corpus = scores.shape[1]
    if k == n_corpus:
        idx = torch.arange(n_corpus, device=scores.device).expand(scores.shape[0], -1)
        return _order_ties_by_row(scores, idx)
    top_vals, top_idx = scores.topk(k + 1, dim=1)
    tied = top_vals[:, k] == top_vals[:, k - 1]
    vals, idx = top_vals[:, :k].clone(), top_idx[:, :k].clone()
    if tied.any():
        rows = tied.nonzero().squeeze(1)
        block = scores[rows]
        threshold = top_vals[rows, k - 1].unsqueeze(1)
        above = block > threshold
        at = block == threshold
        need = k - above.sum(dim=1, keepdim=True)
        chosen = above | (at & (at.cumsum(dim=1) <= need))
        sel = chosen.nonzero()[:, 1].view(rows.numel(), k)
        vals[rows] = block.gather(1, sel)
        idx[rows] = sel
    return _order_ties_by_row(vals, idx)


def _torch_search(
    queries: torch.Tensor, corpus: torch.Tensor, k: int, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    n_q, n_c = queries.shape[0], corpus.shape[0]
    chunk = max(1, min(chunk_size, MAX_CHUNK_BYTES // (4 * n_c)))
    out_v = np.empty((n_q, k), dtype=np.float32)
    out_i = np.empty((n_q, k), dtype=np.int64)
    corpus_t = corpus.t()
    with torch.no_grad():
        for start in range(0, n_q, chunk):
            scores = queries[start : start + chunk] @ corpus_t
            v, i = _exact_topk_block(scores, k)
            out_v[start : start + chunk] = v.cpu().numpy()
            out_i[start : start + chunk] = i.cpu().numpy()
    return out_v, out_i


def _fix_boundary_ties(
    values: np.ndarray, indices: np.ndarray, k: int, n_corpus: int, exact_rows, descending: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Given k+1 results per row from a backend without a tie rule, apply the tie rule (see module doc)."""
    if k < n_corpus:
        tied = np.flatnonzero(values[:, k] == values[:, k - 1])
        values, indices = values[:, :k].copy(), indices[:, :k].copy()
        if tied.size:
            values[tied], indices[tied] = exact_rows(tied)
    order = np.lexsort((indices, -values if descending else values), axis=1)
    return np.take_along_axis(values, order, 1), np.take_along_axis(indices, order, 1)


def search_inner_product(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    *,
    backend: str = "auto",
    chunk_size: int = 1024,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum-inner-product search.

    Args:
        queries: (nq, d) float; corpus: (nc, d) float (cast to float32).
        k: results per query (clipped to nc).
        backend: ``"auto"`` (see choose_backend), ``"faiss"`` (IndexFlatIP, on GPU when faiss has one) or
            ``"torch"`` (matmul + topk over query chunks of at most ``chunk_size`` rows and 256 MiB of
            scores).
        device: torch device for the torch backend.
    Returns:
        scores (nq, k) float32, indices (nq, k) int64, sorted by the tie rule of the module docstring.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    k = _check_pair(queries, corpus, k)
    chosen = choose_backend(corpus.shape[1], corpus.shape[0], backend)
    corpus_t = torch.from_numpy(corpus).to(device)
    if chosen == "torch":
        return _torch_search(torch.from_numpy(queries).to(device), corpus_t, k, chunk_size)
    index = faiss.IndexFlatIP(corpus.shape[1])
    if faiss_gpu_available():
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(corpus)
    values, indices = index.search(queries, min(k + 1, corpus.shape[0]))

    def exact_rows(rows: np.ndarray):
        return _torch_search(torch.from_numpy(queries[rows]).to(device), corpus_t, k, chunk_size)

    return _fix_boundary_ties(values, indices.astype(np.int64), k, corpus.shape[0], exact_rows, True)


class RunningTopK:
    """The top k of a corpus searched chunk by chunk, under the module's tie rule.

    Each chunk's top k (already under the tie rule, indices local to the chunk) is merged with the running one:
    the global top k under (score desc, row asc) is the top k of the union of the chunks' top k, so the result
    equals one search over the whole corpus, ties included (chunks may come in any order: the merge sorts by
    row).

    Args:
        n_queries: rows of every chunk's result; k: results kept; descending: scores (True) or distances (False).
    """

    def __init__(self, n_queries: int, k: int, *, descending: bool = True) -> None:
        self.k = int(k)
        self.descending = descending
        self.values: np.ndarray | None = None
        self.indices = np.empty((n_queries, 0), dtype=np.int64)

    def add(self, values: np.ndarray, indices: np.ndarray, offset: int) -> None:
        """Merge one chunk's (nq, k') results; ``indices`` count from the chunk's first row, ``offset``."""
        indices = np.asarray(indices, dtype=np.int64) + int(offset)
        if self.values is None:
            self.values, self.indices = np.asarray(values), indices
        else:
            self.values = np.concatenate([self.values, values], axis=1)
            self.indices = np.concatenate([self.indices, indices], axis=1)
        keys = -self.values if self.descending else self.values
        order = np.lexsort((self.indices, keys), axis=1)[:, : self.k]
        self.values = np.take_along_axis(self.values, order, 1)
        self.indices = np.take_along_axis(self.indices, order, 1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(nq, min(k, rows seen)) values and int64 global rows, sorted by the tie rule."""
        if self.values is None:
            raise EvaluationError("no chunk was searched")
        return self.values, self.indices


def search_hamming(
    query_codes: np.ndarray, corpus_codes: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming search over packed binary codes with faiss.IndexBinaryFlat.

    Short codes tie at the k-th distance for most queries; those queries are completed with one
    ``range_search`` per distinct boundary distance t (every code within distance t), keeping all codes closer
    than t and the lowest-row codes at distance t.

    Args:
        query_codes: (nq, B) uint8; corpus_codes: (nc, B) uint8 (B bytes = 8 B bits).
        k: results per query (clipped to nc).
    Returns:
        distances (nq, k) int32 ascending, indices (nq, k) int64; equal distances by corpus row ascending.
    """
    query_codes = np.ascontiguousarray(query_codes, dtype=np.uint8)
    corpus_codes = np.ascontiguousarray(corpus_codes, dtype=np.uint8)
    k = _check_pair(query_codes, corpus_codes, k)
    index = faiss.IndexBinaryFlat(8 * corpus_codes.shape[1])
    index.add(corpus_codes)
    dist, indices = index.search(query_codes, min(k + 1, corpus_codes.shape[0]))

    def exact_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out_d = np.empty((rows.size, k), dtype=np.int32)
        out_i = np.empty((rows.size, k), dtype=np.int64)
        boundary = dist[rows, k - 1]
        for t in np.unique(boundary):
            sel = np.flatnonzero(boundary == t)
            # faiss returns distances < radius: radius t + 1 gives every code at distance <= t.
            lims, d, i = index.range_search(query_codes[rows[sel]], int(t) + 1)
            lims = lims.astype(np.int64)
            counts = np.diff(lims)
            owner = np.repeat(np.arange(sel.size), counts)
            order = np.lexsort((i, d, owner))
            rank_in_row = np.arange(order.size) - np.repeat(lims[:-1], counts)
            keep = order[rank_in_row < k]
            out_d[sel] = d[keep].reshape(sel.size, k)
            out_i[sel] = i[keep].reshape(sel.size, k)
        return out_d, out_i

    return _fix_boundary_ties(
        dist.astype(np.int32), indices.astype(np.int64), k, corpus_codes.shape[0], exact_rows, False
    )


def rescore(
    queries: np.ndarray, corpus: np.ndarray, candidates: np.ndarray, k: int, *, chunk_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank a shortlist by exact inner product (e.g. Hamming top-N, rescored with float vectors).

    Args:
        queries: (nq, d) float; corpus: (nc, d) float; candidates: (nq, N) int corpus rows (-1 = empty slot).
        k: results kept per query (at most N).
    Returns:
        scores (nq, k) float32 and indices (nq, k) int64 under the module's tie rule (empty slots last, score
        -inf).
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    k = min(int(k), candidates.shape[1])
    out_v = np.empty((candidates.shape[0], k), dtype=np.float32)
    out_i = np.empty((candidates.shape[0], k), dtype=np.int64)
    corpus = np.asarray(corpus, dtype=np.float32)
    for start in range(0, candidates.shape[0], chunk_size):
        cand = candidates[start : start + chunk_size]
        q = np.asarray(queries[start : start + chunk_size], dtype=np.float32)
        docs = corpus[np.where(cand < 0, 0, cand)]
        scores = np.einsum("nd,nmd->nm", q, docs)
        scores[cand < 0] = -np.inf
        order = np.lexsort((np.where(cand < 0, np.iinfo(np.int64).max, cand), -scores), axis=1)[:, :k]
        out_v[start : start + chunk_size] = np.take_along_axis(scores, order, 1)
        out_i[start : start + chunk_size] = np.take_along_axis(cand, order, 1)
    return out_v, out_i
