import math

import pytest
import torch
import torch.nn.functional as F

from smec.errors import ConfigError
from smec.losses.rank import InfoNCELoss, PairwiseRankLoss


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def _brute_rank(scores, relevance, tau=1.0):
    num = den = 0.0
    b, n = scores.shape
    for i in range(b):
        for j in range(n):
            for k in range(n):
                if relevance[i, j] > relevance[i, k]:
                    w = float(relevance[i, j] - relevance[i, k])
                    num += w * _softplus(float(scores[i, k] - scores[i, j]) / tau)
                    den += w
    return num / den


@pytest.fixture
def qd():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=1)
    d = F.normalize(torch.randn(7, 8, dtype=torch.float64), dim=1)
    return q, d


def test_rank_hand_computed_two_pairs():
    # q = I, so scores = d.T = [[1, 0], [0.5, 0.2]]: terms softplus(0−1) and softplus(0.5−0.2), mean of 2.
    q, d = torch.eye(2), torch.tensor([[1.0, 0.5], [0.0, 0.2]])
    expected = (_softplus(-1.0) + _softplus(0.3)) / 2
    assert PairwiseRankLoss()(q, d).loss.item() == pytest.approx(expected, rel=1e-6)


def test_rank_in_batch_matches_brute_force_with_extra_negatives(qd):
    q, d = qd
    relevance = torch.cat([torch.eye(5), torch.zeros(5, 2)], dim=1)
    out = PairwiseRankLoss(temperature=0.1)(q, d)
    assert out.loss.item() == pytest.approx(_brute_rank(q @ d.T, relevance, 0.1), rel=1e-10)


def test_rank_identity_relevance_equals_default(qd):
    q, d = qd
    relevance = torch.cat([torch.eye(5), torch.zeros(5, 2)], dim=1)
    loss_fn = PairwiseRankLoss(temperature=0.5)
    torch.testing.assert_close(loss_fn(q, d, relevance=relevance).loss, loss_fn(q, d).loss)


def test_rank_graded_matches_brute_force(qd):
    q, d = qd
    relevance = torch.tensor(
        [
            [2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            [0.0, 0.0, 3.0, 0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0],
        ]
    )
    out = PairwiseRankLoss()(q, d, relevance=relevance)
    assert out.loss.item() == pytest.approx(_brute_rank(q @ d.T, relevance), rel=1e-10)


def test_rank_temperature_divides_score_differences(qd):
    q, d = qd
    torch.testing.assert_close(PairwiseRankLoss(0.25)(q, d).loss, PairwiseRankLoss(1.0)(q * 4, d).loss)


def test_rank_without_ordered_pairs_is_zero_with_a_graph(qd):
    q, d = qd
    q = q.clone().requires_grad_()
    out = PairwiseRankLoss()(q, d, relevance=torch.ones(5, 7))
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert torch.count_nonzero(q.grad) == 0


def test_rank_gradients_match_finite_differences(qd):
    q, d = qd
    q = q.clone().requires_grad_()
    relevance = torch.eye(5, 7) * 2 + torch.eye(5, 7).roll(1, dims=1)
    loss_fn = PairwiseRankLoss(0.3)
    assert torch.autograd.gradcheck(lambda q_: loss_fn(q_, d, relevance=relevance).loss, (q,))
    assert torch.autograd.gradcheck(lambda q_: loss_fn(q_, d).loss, (q,))


def test_per_dim_mapping_and_weights(qd):
    q, d = qd
    pairs = {4: (F.normalize(q[:, :4], dim=1), F.normalize(d[:, :4], dim=1)), 8: (q, d)}
    for loss_fn in (PairwiseRankLoss(), InfoNCELoss()):
        out = loss_fn(pairs, weights={4: 2.0, 8: 0.5})
        assert sorted(out.per_dim) == [4, 8]
        torch.testing.assert_close(out.per_dim[8], loss_fn(q, d).loss)
        torch.testing.assert_close(out.loss, 2.0 * out.per_dim[4] + 0.5 * out.per_dim[8])
        assert list(loss_fn(q, d).per_dim) == [8]


def test_infonce_hand_computed_uniform_scores_give_log_b():
    q = torch.ones(3, 2) / math.sqrt(2)
    assert InfoNCELoss()(q, q).loss.item() == pytest.approx(math.log(3))


def test_infonce_matches_brute_force_and_symmetric_average(qd):
    q, d = qd
    d = d[:5]
    s = (q @ d.T / 0.05).tolist()

    def nll(rows):
        return sum(math.log(sum(math.exp(v) for v in row)) - row[i] for i, row in enumerate(rows)) / len(rows)

    forward = nll(s)
    backward = nll([list(col) for col in zip(*s)])
    assert InfoNCELoss()(q, d).loss.item() == pytest.approx(forward, rel=1e-10)
    assert InfoNCELoss(symmetric=True)(q, d).loss.item() == pytest.approx((forward + backward) / 2, rel=1e-10)


def test_infonce_extra_negatives_only_in_one_direction(qd):
    q, d = qd
    assert InfoNCELoss()(q, d).loss > InfoNCELoss()(q, d[:5]).loss
    with pytest.raises(ValueError, match=r"symmetric InfoNCE needs as many documents as queries, got 7 vs 5"):
        InfoNCELoss(symmetric=True)(q, d)


@pytest.mark.parametrize("cls", [PairwiseRankLoss, InfoNCELoss])
@pytest.mark.parametrize("tau", [0, -1.0, "0.1"])
def test_bad_temperature(cls, tau):
    with pytest.raises(ConfigError, match=r"temperature must be a number > 0, got"):
        cls(temperature=tau)


def test_input_errors(qd):
    q, d = qd
    loss_fn = PairwiseRankLoss()
    with pytest.raises(ValueError, match=r"relevance must have shape \(B, N\) = \(5, 7\), got \(5, 5\)"):
        loss_fn(q, d, relevance=torch.eye(5))
    with pytest.raises(ValueError, match=r"relevance must be >= 0"):
        loss_fn(q, d, relevance=-torch.ones(5, 7))
    with pytest.raises(ValueError, match=r"expected q \(B, d\) and d \(N, d\) with N >= B"):
        loss_fn(q, d[:3])
    with pytest.raises(ValueError, match=r"pass either tensors q and d, or one mapping"):
        loss_fn({8: (q, d)}, d)
    with pytest.raises(ValueError, match=r"weights has sizes \[4\], embeddings have sizes \[8\]"):
        loss_fn(q, d, weights={4: 1.0})
