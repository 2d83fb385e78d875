import pytest
import torch

from smec.losses.query_prediction import QueryPredictionLoss


def test_the_prediction_term_matches_the_hand_computed_equation():
    loss = QueryPredictionLoss(2, hidden_dim=1)
    first, last = [m for m in loss.predictor.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():  # h(z) = [2, -1] · relu(z_0 + z_1)
        first.weight.copy_(torch.tensor([[1.0, 1.0]]))
        first.bias.zero_()
        last.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        last.bias.zero_()
    docs = torch.tensor([[1.0, 0.0], [-1.0, -1.0]], requires_grad=True)
    queries = torch.tensor([[2.0, 1.0], [0.0, 0.0]])
    # p(docs) = docs + h(docs) = [[3, -1], [-1, -1]]; |p − q| = [[1, 2], [1, 1]]; mean 5/4.
    value = loss(docs, queries)
    assert value.item() == pytest.approx(1.25)
    value.backward()
    assert docs.grad is not None and torch.count_nonzero(docs.grad) > 0  # the adapted side is trained


def test_the_predictor_starts_as_the_identity_and_the_query_is_a_fixed_target():
    docs, queries = torch.randn(4, 3), torch.randn(4, 3, requires_grad=True)
    value = QueryPredictionLoss(3)(docs, queries)
    torch.testing.assert_close(value, (docs - queries).abs().mean())
    value.backward()
    assert queries.grad is None


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"same shape \(B, D\), got \(4, 3\) and \(4, 2\)"):
        QueryPredictionLoss(3)(torch.randn(4, 3), torch.randn(4, 2))
