import math
import re

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


# --- per-query (mined) negatives ----------------------------------------------------------------------------


@pytest.fixture
def qdn(qd):
    q, d = qd
    torch.manual_seed(1)
    n = F.normalize(torch.randn(5, 3, 8, dtype=torch.float64), dim=-1)
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    return q, d, n, mask


def _brute_rank_with_negatives(q, d, n, mask, tau=1.0):
    num = den = 0.0
    s = q @ d.T
    for i in range(q.shape[0]):
        for k in range(d.shape[0]):
            if k != i:
                num, den = num + _softplus(float(s[i, k] - s[i, i]) / tau), den + 1
        for j in range(n.shape[1]):
            if mask[i, j]:
                num, den = num + _softplus(float(n[i, j] @ q[i] - s[i, i]) / tau), den + 1
    return num / den


def test_rank_with_negatives_matches_brute_force(qdn):
    q, d, n, mask = qdn
    out = PairwiseRankLoss(0.3)(q, d, negatives=n, mask=mask)
    assert out.loss.item() == pytest.approx(_brute_rank_with_negatives(q, d, n, mask, 0.3), rel=1e-10)


def test_infonce_with_negatives_matches_brute_force(qdn):
    q, d, n, mask = qdn
    total = 0.0
    for i in range(5):
        logits = [float(q[i] @ d[k]) / 0.05 for k in range(7)]
        logits += [float(q[i] @ n[i, j]) / 0.05 for j in range(3) if mask[i, j]]
        total += math.log(sum(math.exp(v) for v in logits)) - logits[i]
    assert InfoNCELoss()(q, d, negatives=n, mask=mask).loss.item() == pytest.approx(total / 5, rel=1e-10)


@pytest.mark.parametrize("loss_fn", [PairwiseRankLoss(0.5), InfoNCELoss()])
def test_a_padded_negative_changes_nothing(qdn, loss_fn):
    q, d, n, mask = qdn
    q = q.clone().requires_grad_()
    garbage = n.clone()
    garbage[~mask] = 1e3  # whatever sits in a padding slot
    padded = loss_fn(q, d, negatives=garbage, mask=mask).loss
    (grad,) = torch.autograd.grad(padded, q)
    other = loss_fn(q, d, negatives=n, mask=mask).loss
    torch.testing.assert_close(padded, other)
    torch.testing.assert_close(grad, torch.autograd.grad(other, q)[0])
    # A last slot that is padding everywhere: the same loss as without that slot.
    last = mask.clone()
    last[:, 2] = False
    dropped = loss_fn(q, d, negatives=n[:, :2], mask=last[:, :2]).loss
    torch.testing.assert_close(loss_fn(q, d, negatives=garbage, mask=last).loss, dropped)
    # Every slot padded: exactly the in-batch loss.
    none = loss_fn(q, d, negatives=n, mask=torch.zeros(5, 3, dtype=torch.bool)).loss
    torch.testing.assert_close(none, loss_fn(q, d).loss)


@pytest.mark.parametrize("loss_fn", [PairwiseRankLoss(0.5), InfoNCELoss(symmetric=True)])
def test_without_negatives_the_loss_is_todays_exactly(qd, loss_fn):
    q, d = qd
    d = d[:5]
    scores = q @ d.T
    if isinstance(loss_fn, PairwiseRankLoss):
        rows = torch.arange(5)
        terms = F.softplus((scores - scores[rows, rows].unsqueeze(1)) / 0.5)
        today = terms.masked_fill(F.one_hot(rows, 5).bool(), 0.0).sum() / (5 * 4)
    else:
        labels = torch.arange(5)
        today = (F.cross_entropy(scores / 0.05, labels) + F.cross_entropy(scores.T / 0.05, labels)) / 2
    assert torch.equal(loss_fn(q, d).loss, today)
    assert torch.equal(loss_fn({8: (q, d)}).loss, today)


def test_hard_negatives_raise_the_loss_and_get_gradient(qdn):
    q, d, n, _ = qdn
    hard = (q.unsqueeze(1) + 0.01 * n).detach().requires_grad_()  # nearly the query itself
    for loss_fn in (PairwiseRankLoss(), InfoNCELoss()):
        out = loss_fn(q, d, negatives=hard)
        assert out.loss > loss_fn(q, d).loss
        (grad,) = torch.autograd.grad(out.loss, hard)
        assert torch.count_nonzero(grad) == grad.numel()


def test_graded_relevance_with_negatives_matches_brute_force(qdn):
    q, d, n, mask = qdn
    relevance = torch.eye(5, 7) * 2 + torch.eye(5, 7).roll(1, dims=1)
    # The negatives as extra documents of relevance 0 that only their query sees.
    num = den = 0.0
    for i in range(5):
        scores = [float(q[i] @ d[k]) for k in range(7)] + [
            float(q[i] @ n[i, j]) for j in range(3) if mask[i, j]
        ]
        rel = relevance[i].tolist() + [0.0] * int(mask[i].sum())
        for y_j, s_j in zip(rel, scores):
            for y_k, s_k in zip(rel, scores):
                if y_j > y_k:
                    num, den = num + (y_j - y_k) * _softplus(s_k - s_j), den + (y_j - y_k)
    out = PairwiseRankLoss()(q, d, relevance=relevance, negatives=n, mask=mask)
    assert out.loss.item() == pytest.approx(num / den, rel=1e-10)


def test_negatives_per_size_and_their_errors(qdn):
    q, d, n, mask = qdn
    pairs = {4: (F.normalize(q[:, :4], dim=1), F.normalize(d[:, :4], dim=1)), 8: (q, d)}
    negs = {4: F.normalize(n[..., :4], dim=-1), 8: n}
    for loss_fn in (PairwiseRankLoss(), InfoNCELoss()):
        out = loss_fn(pairs, negatives=negs, mask=mask)
        torch.testing.assert_close(out.per_dim[8], loss_fn(q, d, negatives=n, mask=mask).loss)
        with pytest.raises(
            ValueError, match=re.escape("negatives has sizes [8], embeddings have sizes [4, 8]")
        ):
            loss_fn(pairs, negatives={8: n})
        with pytest.raises(ValueError, match=re.escape("pass negatives as a mapping {dim: (B, K, dim)}")):
            loss_fn(pairs, negatives=n)
        with pytest.raises(
            ValueError, match=re.escape("size 8: expected negatives (B, K, d) = (5, K, 8), got")
        ):
            loss_fn(q, d, negatives=n[:4])
        with pytest.raises(
            ValueError, match=re.escape("mask must be a bool tensor of shape (B, K) = (5, 3)")
        ):
            loss_fn(q, d, negatives=n, mask=mask.float())
        with pytest.raises(ValueError, match="mask is given without negatives"):
            loss_fn(q, d, mask=mask)
