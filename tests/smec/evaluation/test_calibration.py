"""The calibration sample: the rows `smec eval` fits quantisers on, which `smec export` must fit on too."""

import numpy as np
import pytest

from smec.evaluation.calibration import calibration_positions, calibration_rows
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.quantize import BinaryQuantizer, ScalarQuantizer, l2_normalize


def _data(n_docs=60, n_q=12, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    # Shuffled ids so that corpus order, id order and doc-id-descending order all differ.
    corpus_ids = [f"d{i:03d}" for i in rng.permutation(n_docs)]
    query_ids = [f"q{i}" for i in range(n_q)]
    qrels = {q: {corpus_ids[(5 * i) % n_docs]: 1} for i, q in enumerate(query_ids)}
    return qrels, query_ids, corpus_ids, rng.standard_normal((n_q, dim)), rng.standard_normal((n_docs, dim))


def _scores(q, c, precision, sample):
    if precision == "int8":
        sq = ScalarQuantizer(8).fit(sample)
        dq = l2_normalize(sq.decode(sq.encode(q)))
        dc = l2_normalize(sq.decode(sq.encode(c)))
        return dq @ dc.T
    bq = BinaryQuantizer("median").fit(sample)
    sq_, sc_ = BinaryQuantizer.unpack_signs(bq.encode(q)), BinaryQuantizer.unpack_signs(bq.encode(c))
    return sq_ @ sc_.T / q.shape[1]


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_the_evaluator_fits_quantisers_on_calibration_rows(precision):
    qrels, qids, cids, queries, corpus = _data()
    ev = RetrievalEvaluator(qrels, qids, cids, input_dim=16, calibration_size=25, seed=3, k=60)
    [row] = ev.evaluate("m", queries, corpus, precisions=[precision])
    q, c = l2_normalize(queries), l2_normalize(corpus)
    n = len(cids)

    def ndcg(sample):
        scores = _scores(q, c, precision, sample)
        return ev.score_ranking(
            "m", 16, precision, 1, scores, np.tile(np.arange(n), (len(qids), 1)), scoring="x"
        )

    rows = calibration_rows(cids, 25, seed=3)
    assert rows.shape == (25,) and len(set(rows.tolist())) == 25
    assert ndcg(c[rows])["per_query"]["ndcg@10"].tolist() == row["per_query"]["ndcg@10"].tolist()
    # The check has teeth: another sample gives other codes, so other scores for some query.
    other = ndcg(c[calibration_rows(cids, 25, seed=4)])["per_query"]["ndcg@10"]
    assert other.tolist() != row["per_query"]["ndcg@10"].tolist()


def test_rows_come_in_doc_id_descending_order_and_all_when_the_sample_covers_the_corpus():
    _, _, cids, _, _ = _data(n_docs=20)
    everything = calibration_rows(cids, None)
    assert [cids[i] for i in everything] == sorted(cids, reverse=True)
    assert calibration_rows(cids, 20).tolist() == everything.tolist()
    assert calibration_positions(np.arange(20), 50) is None
    sample = [cids[i] for i in calibration_rows(cids, 7, seed=1)]
    assert sample == sorted(sample, reverse=True)
