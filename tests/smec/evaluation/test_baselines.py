import numpy as np
import pytest

from smec.evaluation.baselines import (
    PCA,
    OPQProductQuantizer,
    RandomRotation,
    SmallSampleWarning,
    Truncation,
    run_baselines,
)
from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.grid import GridWarning
from smec.evaluation.spec import EvaluationSpec


@pytest.fixture
def split():
    """Two 16-d 'models' over 320 docs; queries are noisy copies of their relevant doc."""
    rng = np.random.default_rng(0)
    scales = np.linspace(2.0, 0.2, 16, dtype=np.float32)
    models = {}
    rel = rng.integers(0, 320, 30)
    for name in ("a", "b"):
        corpus = rng.standard_normal((320, 16)).astype(np.float32) * scales
        queries = corpus[rel] + 0.5 * rng.standard_normal((30, 16)).astype(np.float32)
        models[name] = (queries, corpus)
    qids, cids = [f"q{i}" for i in range(30)], [f"d{j}" for j in range(320)]
    qrels = {qids[i]: {cids[rel[i]]: 1} for i in range(30)}
    return models, qids, cids, qrels


def test_pca_components_are_ordered_orthonormal_and_deterministic():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 12)) @ rng.standard_normal((12, 12)) + 3.0
    pca = PCA(n_components=6).fit(x)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(6), atol=1e-5)
    y = pca.transform(x)
    assert y.shape == (500, 6)
    assert np.all(np.diff(y.var(axis=0)) < 0)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-4)
    # Same subspace as an SVD of the centred data, component by component (up to sign, which PCA fixes).
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(pca.components * vt[:6], axis=1)), 1.0, atol=1e-4)
    np.testing.assert_array_equal(PCA(6).fit(x).components, pca.components)
    assert np.all(np.diff(pca.explained_variance_ratio) <= 0) and pca.explained_variance_ratio.sum() < 1


def test_random_rotation_is_orthogonal_and_seeded():
    x = np.ones((3, 24), dtype=np.float32)
    rot = RandomRotation(seed=4).fit(x)
    np.testing.assert_allclose(rot.matrix.T @ rot.matrix, np.eye(24), atol=1e-5)
    np.testing.assert_array_equal(RandomRotation(seed=4).fit(x).matrix, rot.matrix)
    assert not np.allclose(RandomRotation(seed=5).fit(x).matrix, rot.matrix)
    np.testing.assert_allclose(np.linalg.norm(rot.transform(x), axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    assert Truncation().fit(x).transform(x) is not None


def test_opq_pq_row_and_budget(split):
    models, qids, cids, qrels = split
    queries = np.hstack([models["a"][0], models["b"][0]])
    corpus = np.hstack([models["a"][1], models["b"][1]])
    ev = RetrievalEvaluator(qrels, qids, cids, input_dim=32, k=50)
    quantizer = OPQProductQuantizer(64, pq_iters=5, opq_iters=2).fit(corpus)
    row = quantizer.evaluate(ev, queries, corpus)
    assert (row["method"], row["dim"], row["precision"], row["bits"]) == ("opq-pq", 8, "pq", 64)
    assert row["compression"] == 32 * 32 / 64 and row["scoring"] == "opq-adc"
    assert row["ndcg@10"] > 0.3
    with pytest.raises(EvaluationError, match="OPQ\\+PQ bits must be a positive multiple of 8, got 12"):
        OPQProductQuantizer(12)
    with pytest.raises(EvaluationError, match="OPQ\\+PQ needs at least 256 training vectors"):
        OPQProductQuantizer(64).fit(corpus[:100])


def test_opq_on_a_small_sample_prints_no_faiss_warnings(split, capfd):
    """faiss's k-means prints one "please provide at least N training points" per sub-quantiser and OPQ round
    (from C++, straight to the stderr file descriptor); the fit turns that print off and is otherwise the same."""
    corpus = np.hstack([split[0]["a"][1], split[0]["b"][1]])
    OPQProductQuantizer(64, pq_iters=3, opq_iters=2).fit(corpus)
    assert "please provide" not in capfd.readouterr().err


def test_run_baselines_grid(split):
    models, qids, cids, qrels = split
    queries = np.hstack([models["a"][0], models["b"][0]])
    corpus = np.hstack([models["a"][1], models["b"][1]])
    ev = RetrievalEvaluator(qrels, qids, cids, input_dim=32, k=20)
    with pytest.warns((GridWarning, SmallSampleWarning)) as caught:
        rows = run_baselines(
            ev,
            {n: m[0] for n, m in models.items()},
            {n: m[1] for n, m in models.items()},
            queries,
            corpus,
            dims=[8, 24],
            spec=EvaluationSpec(precisions=("float32", "binary"), calibration_size=300),
        )
    assert [str(w.message) for w in caught] == [  # one warning for the grid, naming what it left out
        "OPQ trained on 300 rows; faiss recommends >= 9,984",  # and one for OPQ's small sample
        "left out of the grid: model:a at dims [24] (wider than its 16 dims; its full width is evaluated); "
        "model:b at dims [24] (wider than its 16 dims; its full width is evaluated)",
    ]
    assert caught[0].category is SmallSampleWarning
    got = {(r["method"], r["dim"], r["precision"]) for r in rows}
    assert ("model:a", 16, "binary") in got and ("model:b", 8, "float32") in got
    assert ("model:a", 24, "float32") not in got  # wider than the model
    assert {("concat", d, p) for d in (8, 24, 32) for p in ("float32", "binary")} <= got
    assert ("pca", 24, "binary") in got and ("pca", 32, "float32") not in got
    assert {r["precision"] for r in rows if r["method"] == "rotation"} == {"binary"}
    assert {(r["dim"], r["bits"]) for r in rows if r["method"] == "opq-pq"} == {(8, 64), (24, 192)}
    assert len(rows) == len(got)


def test_run_baselines_adds_the_spec_codes_on_concat_and_wide_pca(split):
    models, qids, cids, qrels = split
    queries = np.hstack([models["a"][0], models["b"][0]])
    corpus = np.hstack([models["a"][1], models["b"][1]])
    ev = RetrievalEvaluator(qrels, qids, cids, input_dim=32, k=20)
    base = EvaluationSpec(precisions=("float32", "binary"), calibration_size=300, pq=False)
    codes = [{"name": "rabitq", "budgets": [12]}, {"name": "sq4-quantiles", "methods": ["pca"]}]
    kwargs = dict(
        queries_by_model={}, corpus_by_model={}, concat_queries=queries, concat_corpus=corpus, dims=[8]
    )
    plain = run_baselines(ev, spec=base, **kwargs)
    with pytest.warns(GridWarning, match=r"pca \+ sq4-quantiles at \[1\] bytes"):
        rows = run_baselines(ev, spec=EvaluationSpec(**{**base.to_dict(), "codes": codes}), **kwargs)
    key = ("method", "dim", "precision", "bits", "ndcg@10", "recall@20")
    assert [[r[k] for k in key] for r in rows[: len(plain)]] == [[r[k] for k in key] for r in plain]
    added = [(r["method"], r["precision"], r["dim"], r["bytes"]) for r in rows[len(plain) :]]
    # Budgets at >= 24x of 128 bytes: binary at 8 dims = 1 byte (float32 at 8 = 32 bytes is 4x); rabitq at
    # its own 12 bytes: 32 dims (4 sign bytes + 8); on PCA too: PCA keeps all 32 components for the codes.
    assert added == [("concat", "rabitq", 32, 12), ("pca", "rabitq", 32, 12)]
