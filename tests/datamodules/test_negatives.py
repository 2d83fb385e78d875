"""Hard-negative mining: never a positive, the filters hold, deterministic, cached, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamodules.errors import InputError
from datamodules.negatives import MiningSpec, mine_hard_negatives
from datamodules.store.combine import combine
from datamodules.store.reader import EmbeddingStore
from tests.conftest import build_store


@pytest.fixture
def store(tmp_path):
    return EmbeddingStore(build_store(tmp_path / "store", n_corpus=120, splits={"train": 30, "dev": 5}))


def brute_force(store: EmbeddingStore, spec: MiningSpec, split: str = "train") -> np.ndarray:
    """The module docstring's rule, one query at a time, in plain Python."""
    models = store.models
    q = combine([store.array(m, f"queries/{split}").read() for m in models])
    c = combine([store.array(m, "corpus").read() for m in models])
    corpus_ids = store.ids("corpus")
    qrels = store.qrels(split)
    out = []
    for i, qid in enumerate(store.ids(f"queries/{split}")):
        pos = {corpus_ids.index(d) for d, g in qrels.get(qid, {}).items() if g > 0}
        row = [-1] * spec.num_negatives
        if pos:
            s = q[i] @ c.T
            best = max(s[j] for j in pos)
            ranked = sorted((j for j in range(len(c)) if j not in pos), key=lambda j: (-s[j], j))
            window = ranked[spec.range_min : spec.depth]
            kept = [
                j
                for j in window
                if (spec.max_score is None or s[j] <= spec.max_score)
                and (spec.min_score is None or s[j] >= spec.min_score)
                and (spec.absolute_margin is None or s[j] <= best - spec.absolute_margin)
                and (spec.relative_margin is None or s[j] <= best - abs(best) * spec.relative_margin)
            ][: spec.num_negatives]
            row[: len(kept)] = kept
        out.append(row)
    return np.asarray(out, dtype=np.int64)


@pytest.mark.parametrize(
    "spec",
    [
        MiningSpec(num_negatives=4, relative_margin=None),
        MiningSpec(num_negatives=3, range_min=2, range_max=20),
        MiningSpec(num_negatives=5, relative_margin=0.05),
        MiningSpec(num_negatives=4, relative_margin=None, absolute_margin=0.0, max_score=0.5),
    ],
)
def test_top_sampling_equals_the_rule_and_never_holds_a_positive(store, spec):
    mined = mine_hard_negatives(store, store.models, "train", spec, chunk_queries=7)
    assert np.array_equal(mined.rows, brute_force(store, spec))
    corpus_ids = store.ids("corpus")
    for qid, row in zip(store.ids("queries/train"), mined.rows):
        positives = {corpus_ids.index(d) for d in store.qrels("train")[qid]}
        assert not positives & set(row.tolist())


def test_random_sampling_is_seeded_and_draws_from_the_window(store):
    spec = MiningSpec(num_negatives=3, range_max=12, relative_margin=None, sampling="random", seed=5)
    a = mine_hard_negatives(store, store.models, "train", spec, cache_dir=store.path / "a")
    b = mine_hard_negatives(store, store.models, "train", spec, cache_dir=store.path / "b", chunk_queries=4)
    assert np.array_equal(a.rows, b.rows)  # chunking does not change the draw
    window = brute_force(store, MiningSpec(num_negatives=12, range_max=12, relative_margin=None))
    for row, allowed in zip(a.rows, window):
        assert set(row.tolist()) <= set(allowed.tolist())
    other = mine_hard_negatives(store, store.models, "train", MiningSpec(**{**spec.__dict__, "seed": 6}))
    assert not np.array_equal(a.rows, other.rows)


def test_the_cache_is_reused_and_keyed_by_settings(store, monkeypatch):
    spec = MiningSpec(num_negatives=2)
    first = mine_hard_negatives(store, store.models, "train", spec)
    assert first.folder.parent == store.path / "negatives"
    assert json.loads((first.folder / "manifest.json").read_text())["queries"] == 30

    def boom(*args, **kwargs):
        raise AssertionError("mined again")

    monkeypatch.setattr("datamodules.negatives._mine_chunk", boom)
    again = mine_hard_negatives(store, store.models, "train", spec)
    assert again.folder == first.folder and np.array_equal(again.rows, first.rows)
    with pytest.raises(AssertionError, match="mined again"):
        mine_hard_negatives(store, store.models, "train", MiningSpec(num_negatives=3))
    with pytest.raises(AssertionError, match="mined again"):
        mine_hard_negatives(store, ["m1"], "train", spec)


def test_a_killed_mining_resumes_byte_identical(store, tmp_path, monkeypatch):
    spec = MiningSpec(num_negatives=3)
    reference = mine_hard_negatives(
        store, store.models, "train", spec, cache_dir=tmp_path / "ref", chunk_queries=8
    )
    import datamodules.negatives as negatives

    real, calls = negatives._mine_chunk, []

    def dies_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(negatives, "_mine_chunk", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        mine_hard_negatives(store, store.models, "train", spec, cache_dir=tmp_path / "run", chunk_queries=8)
    assert not list((tmp_path / "run").glob("*/manifest.json"))  # incomplete: never loaded as a cache
    calls.clear()
    monkeypatch.setattr(negatives, "_mine_chunk", real)
    resumed = mine_hard_negatives(
        store, store.models, "train", spec, cache_dir=tmp_path / "run", chunk_queries=8
    )
    assert (resumed.folder / "negatives.npy").read_bytes() == (
        reference.folder / "negatives.npy"
    ).read_bytes()


def test_queries_without_positives_get_no_negatives(tmp_path):
    path = build_store(tmp_path / "store", n_corpus=50, splits={"train": 6})
    qrels = json.loads((path / "qrels" / "train.json").read_text())
    qrels.pop("train-q2")
    (path / "qrels" / "train.json").write_text(json.dumps(qrels))
    store = EmbeddingStore(path)
    spec = MiningSpec(
        num_negatives=2, relative_margin=None
    )  # random rows: most documents outscore the positive
    mined = mine_hard_negatives(store, store.models, "train", spec)
    assert mined.rows[2].tolist() == [-1, -1] and (mined.rows[[0, 1, 3, 4, 5]] >= 0).all()
    assert mined.manifest["queries_with_positives"] == 5


def test_a_strict_filter_leaves_short_queries_counted(store):
    mined = mine_hard_negatives(store, store.models, "train", MiningSpec(num_negatives=4, max_score=-0.2))
    assert mined.short_queries == int((mined.rows < 0).any(axis=1).sum()) > 0
    assert mined.manifest["dropped_by"]["max_score"] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_negatives": 0}, "data.negatives.num_negatives: expected an integer >= 1, got 0"),
        ({"range_min": -1}, "data.negatives.range_min: expected an integer >= 0, got -1"),
        (
            {"num_negatives": 4, "range_min": 3, "range_max": 5},
            "data.negatives.range_max: expected an integer >= range_min + num_negatives = 7, got 5",
        ),
        (
            {"relative_margin": -0.1},
            "data.negatives.relative_margin: expected a number >= 0 or null, got -0.1",
        ),
        ({"max_score": float("nan")}, "data.negatives.max_score: expected a number or null, got nan"),
        ({"min_score": 0.9, "max_score": 0.1}, "data.negatives: min_score 0.9 is above max_score 0.1"),
        ({"sampling": "hard"}, "data.negatives.sampling: expected one of top, random, got 'hard'"),
    ],
)
def test_bad_settings_name_the_option(kwargs, message):
    with pytest.raises(InputError, match="^" + __import__("re").escape(message)):
        MiningSpec(**kwargs)


def test_a_split_without_pairs_is_refused(tmp_path):
    path = build_store(tmp_path / "store", n_corpus=20, splits={"train": 4})
    (path / "qrels" / "train.json").write_text("{}")
    store = EmbeddingStore(path)
    with pytest.raises(InputError, match="split 'train' has no \\(query, relevant document\\) pairs"):
        mine_hard_negatives(store, store.models, "train")
