"""Hard negatives mined from the frozen concatenation: for every labelled query, documents that score high but are
not among its positives.

SMEC trains on labelled in-domain data with mined hard samples (docs/methods.md#smec); a supervised rank loss
over random in-batch negatives only sees easy ones. :func:`mine_hard_negatives` searches the corpus with the
frozen concatenation (exact inner product of the L2-normalised rows, the evaluator's scoring) and keeps, per
query, the best-ranked documents that pass the filters of :class:`MiningSpec`, whose options follow
sentence-transformers' ``mine_hard_negatives`` (``range_min`` / ``range_max``, ``max_score`` / ``min_score``,
``absolute_margin`` / ``relative_margin``, ``sampling``):

- candidates are the corpus rows ranked by score (ties by row, so the result does not depend on BLAS threads
  beyond float rounding), **every** positive of the query removed first, then ranks ``range_min`` to
  ``range_max`` of what is left;
- a candidate is kept if ``min_score <= s <= max_score``, ``s <= p - absolute_margin`` and
  ``s <= p - |p| · relative_margin``, where p is the query's best positive score (the filters that are set);
- ``sampling: top`` keeps the first ``num_negatives`` kept candidates (hardest first), ``random`` draws them
  without replacement with a generator seeded by ``(seed, query row)``, listed in rank order.

A query with fewer kept candidates gets ``-1`` in the missing slots (the report counts them). The result is one
``(n_queries, num_negatives)`` int64 array of corpus rows per query row of ``queries/<split>`` (all ``-1`` for a
query without a positive), so it serves every (query, positive) pair of that query.

Cache: ``<store>/negatives/<split>-<key>/`` (or ``cache_dir``), where ``key`` hashes the settings, the models
and the exact store content they were mined from (the shards' sha256), so a changed store or setting mines
again and an unchanged one loads. Mining runs in chunks of queries, each written atomically as it finishes; a
killed run resumes after its last finished chunk and ends with files byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import InputError
from datamodules.files import atomic_write_bytes, atomic_write_json, npy_bytes
from datamodules.paths import safe_child
from datamodules.store.reader import EmbeddingStore

__all__ = ["SAMPLINGS", "MinedNegatives", "MiningSpec", "mine_hard_negatives"]

SAMPLINGS = ("top", "random")
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROWS_FILE = "negatives.npy"


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _count(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


@dataclass(frozen=True)
class MiningSpec:
    """How hard negatives are mined (see the module docstring).

    Args:
        num_negatives: negatives per query (default 8).
        range_min: candidates ranked above this (0-based, positives removed) are skipped (default 0).
        range_max: candidates ranked at or below this are not considered (default None: ``range_min + 10 ·
            num_negatives`` when a score filter is set, else ``range_min + num_negatives``, as
            sentence-transformers derives it).
        max_score / min_score: keep candidates scoring at most / at least this (cosine; default None: off).
        absolute_margin: keep candidates scoring at least this much below the query's best positive (default
            None: off; 0 keeps only candidates below the positive).
        relative_margin: keep candidates at least this fraction of the positive score's magnitude below it
            (default None: off, as in sentence-transformers; NV-Retriever's 0.05 guards against unlabelled
            positives where the labelled document ranks near the top, but where the frozen input often ranks it
            below many others — the full WordNet's train split: with 0.05 and the default range, 17,414 of 29,925
            queries got fewer than 8 negatives — it throws away exactly the hard negatives).
        sampling: ``top`` (default) or ``random``.
        seed: seeds ``random`` sampling (with the query row).
    """

    num_negatives: int = 8
    range_min: int = 0
    range_max: int | None = None
    max_score: float | None = None
    min_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    sampling: str = "top"
    seed: int = 0

    def __post_init__(self) -> None:
        where = "data.negatives"
        if not _count(self.num_negatives, 1):
            raise InputError(f"{where}.num_negatives: expected an integer >= 1, got {self.num_negatives!r}")
        if not _count(self.range_min, 0):
            raise InputError(f"{where}.range_min: expected an integer >= 0, got {self.range_min!r}")
        if self.range_max is not None and (
            not _count(self.range_max, 1) or self.range_max - self.range_min < self.num_negatives
        ):
            raise InputError(
                f"{where}.range_max: expected an integer >= range_min + num_negatives = "
                f"{self.range_min + self.num_negatives}, got {self.range_max!r}"
            )
        for name in ("max_score", "min_score", "absolute_margin", "relative_margin"):
            value = getattr(self, name)
            if value is not None and not _number(value):
                raise InputError(f"{where}.{name}: expected a number or null, got {value!r}")
        for name in ("absolute_margin", "relative_margin"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"{where}.{name}: expected a number >= 0 or null, got {value!r}")
        if self.max_score is not None and self.min_score is not None and self.min_score > self.max_score:
            raise InputError(
                f"{where}: min_score {self.min_score} is above max_score {self.max_score}: nothing can be kept"
            )
        if self.sampling not in SAMPLINGS:
            raise InputError(
                f"{where}.sampling: expected one of {', '.join(SAMPLINGS)}, got {self.sampling!r}"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise InputError(f"{where}.seed: expected an integer, got {self.seed!r}")

    @property
    def filtered(self) -> bool:
        return any(
            v is not None
            for v in (self.max_score, self.min_score, self.absolute_margin, self.relative_margin)
        )

    @property
    def depth(self) -> int:
        """Candidates considered per query, positives removed: ``range_max`` (derived when None)."""
        if self.range_max is not None:
            return self.range_max
        return self.range_min + self.num_negatives * (10 if self.filtered else 1)


@dataclass(frozen=True)
class MinedNegatives:
    """Mined negatives of one split: ``rows[i]`` are corpus rows for query row ``i`` (``-1``: none found)."""

    rows: np.ndarray
    folder: Path
    manifest: Mapping[str, Any] = field(default_factory=dict)

    @property
    def short_queries(self) -> int:
        """Queries with positives that got fewer than ``num_negatives`` negatives."""
        return int(self.manifest.get("short_queries", 0))


def _positives(store: EmbeddingStore, split: str) -> list[np.ndarray]:
    """Corpus rows relevant (grade > 0) to each query row of ``queries/<split>``."""
    qpos = {q: i for i, q in enumerate(store.ids(f"queries/{split}"))}
    dpos = {d: i for i, d in enumerate(store.ids("corpus"))}
    found: list[list[int]] = [[] for _ in qpos]
    for qid, docs in store.qrels(split).items():
        if qid in qpos:
            found[qpos[qid]] += [dpos[d] for d, grade in docs.items() if grade > 0 and d in dpos]
    return [np.unique(np.asarray(rows, dtype=np.int64)) for rows in found]


def _source(store: EmbeddingStore, models: Sequence[str], split: str) -> dict[str, Any]:
    """What the negatives are a function of in the store: the dataset and every read shard's sha256."""
    shards = {
        f"{key}/{text_set}": [s["sha256"] for s in store.array(key, text_set).manifest["shards"]]
        for key in models
        for text_set in ("corpus", f"queries/{split}")
    }
    return {"dataset": store.meta["dataset"], "shards": shards}


def _select(
    scores: np.ndarray, positives: np.ndarray, spec: MiningSpec, rng_key: int
) -> tuple[np.ndarray, dict[str, int]]:
    """The negatives of one query from its (n_corpus,) scores; and how many candidates each filter dropped."""
    best = float(scores[positives].max())
    masked = scores.copy()
    masked[positives] = -np.inf
    depth = min(spec.depth + len(positives), len(masked))
    top = np.argpartition(-masked, depth - 1)[:depth] if depth < len(masked) else np.arange(len(masked))
    order = top[np.lexsort((top, -masked[top]))]  # score descending, then row ascending
    order = order[np.isfinite(masked[order])][spec.range_min : spec.depth]
    s = masked[order]
    keep = np.ones(len(order), dtype=bool)
    dropped: dict[str, int] = {}
    rules = {
        "max_score": None if spec.max_score is None else s <= spec.max_score,
        "min_score": None if spec.min_score is None else s >= spec.min_score,
        "absolute_margin": None if spec.absolute_margin is None else s <= best - spec.absolute_margin,
        "relative_margin": None
        if spec.relative_margin is None
        else s <= best - abs(best) * spec.relative_margin,
    }
    for name, ok in rules.items():
        if ok is not None:
            dropped[name] = int((keep & ~ok).sum())
            keep &= ok
    kept = order[keep]
    if spec.sampling == "random" and len(kept) > spec.num_negatives:
        pick = np.random.default_rng([spec.seed, rng_key]).choice(
            len(kept), spec.num_negatives, replace=False
        )
        kept = kept[np.sort(pick)]
    out = np.full(spec.num_negatives, -1, dtype=np.int64)
    kept = kept[: spec.num_negatives]
    out[: len(kept)] = kept
    return out, dropped


def _cache_folder(
    store: EmbeddingStore, split: str, settings: Mapping[str, Any], cache_dir: str | Path | None
) -> Path:
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else safe_child(store.path, "negatives", what="folder")
    return safe_child(root, f"{split}-{key}", what="split name")


def _load(folder: Path, settings: Mapping[str, Any]) -> MinedNegatives | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("settings") != settings or manifest.get("format_version") != FORMAT_VERSION:
        return None
    rows = np.load(folder / ROWS_FILE, allow_pickle=False)
    return MinedNegatives(rows=rows, folder=folder, manifest=manifest)


def mine_hard_negatives(
    store: EmbeddingStore,
    models: Sequence[str],
    split: str = "train",
    spec: MiningSpec | None = None,
    *,
    normalization: str = "l2-concat-l2",
    model_weights: Sequence[float] | None = None,
    cache_dir: str | Path | None = None,
    chunk_queries: int = 1024,
    on_chunk: Callable[[int, int], None] | None = None,
) -> MinedNegatives:
    """Mine (or load from the cache) the hard negatives of every query of ``queries/<split>``.

    Args:
        store, models, normalization, model_weights: the frozen input, combined as training combines it.
        split: the qrels split whose queries get negatives (their positives are excluded).
        spec: the mining options (default :class:`MiningSpec`).
        cache_dir: where the cache folder goes (default ``<store>/negatives``).
        chunk_queries: queries scored at a time (memory: chunk × corpus float32 scores).
        on_chunk: progress callback ``(queries done, queries in all)``.
    """
    spec = spec or MiningSpec()
    if not _count(chunk_queries, 1):
        raise InputError(f"chunk_queries: expected an integer >= 1, got {chunk_queries!r}")
    models = list(models)
    settings = {
        "spec": asdict(spec),
        "models": models,
        "normalization": normalization,
        "model_weights": None if model_weights is None else [float(w) for w in model_weights],
        "split": split,
        "source": _source(store, models, split),
    }
    folder = _cache_folder(store, split, settings, cache_dir)
    cached = _load(folder, settings)
    if cached is not None:
        return cached
    positives = _positives(store, split)
    if not any(len(p) for p in positives):
        raise InputError(f"{store.path}: split {split!r} has no (query, relevant document) pairs to mine for")
    corpus = store.concat(models, "corpus", normalization, model_weights).to_numpy()
    queries = store.concat(models, f"queries/{split}", normalization, model_weights)
    parts = folder / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    n = len(queries)
    dropped: dict[str, int] = {}
    for c, start in enumerate(range(0, n, chunk_queries)):
        stop = min(n, start + chunk_queries)
        part = parts / f"part-{c:05d}.npy"
        if not part.exists():
            rows, counts = _mine_chunk(queries.read(start, stop), corpus, positives[start:stop], spec, start)
            atomic_write_bytes(part, npy_bytes(rows))
            atomic_write_json(parts / f"part-{c:05d}.json", counts)
        for name, value in json.loads((parts / f"part-{c:05d}.json").read_text()).items():
            dropped[name] = dropped.get(name, 0) + value
        if on_chunk is not None:
            on_chunk(stop, n)
    rows = np.concatenate([np.load(p, allow_pickle=False) for p in sorted(parts.glob("part-*.npy"))], axis=0)
    labelled = np.array([len(p) > 0 for p in positives])
    manifest = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "queries": int(n),
        "queries_with_positives": int(labelled.sum()),
        "short_queries": int(((rows < 0).any(axis=1) & labelled).sum()),
        "negatives": int((rows >= 0).sum()),
        "dropped_by": dropped,
    }
    atomic_write_bytes(folder / ROWS_FILE, npy_bytes(rows))
    atomic_write_json(folder / MANIFEST, manifest)  # last: the cache is complete once it exists
    shutil.rmtree(parts)
    return MinedNegatives(rows=rows, folder=folder, manifest=manifest)


def _mine_chunk(
    queries: np.ndarray, corpus: np.ndarray, positives: Sequence[np.ndarray], spec: MiningSpec, first: int
) -> tuple[np.ndarray, dict[str, int]]:
    scores = queries @ corpus.T  # both L2-normalised by combine: cosines
    rows = np.full((len(queries), spec.num_negatives), -1, dtype=np.int64)
    dropped: dict[str, int] = {}
    for i, pos in enumerate(positives):
        if len(pos) == 0:
            continue
        rows[i], counts = _select(scores[i], pos, spec, first + i)
        for name, value in counts.items():
            dropped[name] = dropped.get(name, 0) + value
    return rows, dropped
