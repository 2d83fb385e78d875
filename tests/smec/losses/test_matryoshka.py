import math

import pytest
import torch
import torch.nn.functional as F

from smec.errors import ConfigError
from smec.losses.matryoshka import MatryoshkaSimilarityLoss
from smec.nn.decoder import Decoder


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _brute_pair(y, x, dims, weights, distance="mse"):
    """Loop-by-loop reference of the paper's loss: B² entries, diagonal zeroed."""
    batch = x.shape[0]
    power = 2 if distance == "mse" else 1
    total = 0.0
    for m, w in zip(dims, weights):
        z = y[:, :m]
        acc = 0.0
        for i in range(batch):
            for j in range(batch):
                if i != j:
                    acc += abs(_cos(z[i], z[j]) - _cos(x[i], x[j])) ** power
        total += w * acc / batch**2
    return total


def _brute_topk(y, x, dims, weights, k, distance="mse"):
    batch = x.shape[0]
    power = 2 if distance == "mse" else 1
    total = 0.0
    for m, w in zip(dims, weights):
        acc = 0.0
        for i in range(batch):
            sims = sorted(((_cos(x[i], x[j]), j) for j in range(batch) if j != i), reverse=True)[:k]
            acc += sum(abs(_cos(y[i, :m], y[j, :m]) - s) ** power for s, j in sims)
        total += w * acc / (batch * k)
    return total


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(6, 10, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)


def test_hand_computed_two_item_case():
    # cos(x1, x2) = 0. Prefix 1: cos = 1 → (1−0)² on 2 of 4 entries = 0.5. Prefix 2: cos = 1/√2 → 0.5·2/4 = 0.25.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    out = MatryoshkaSimilarityLoss([1, 2])(y, x)
    assert out.loss.item() == pytest.approx(0.75)
    assert out.per_dim[1].item() == pytest.approx(0.5)
    assert out.per_dim[2].item() == pytest.approx(0.25)


@pytest.mark.parametrize("distance", ["mse", "l1"])
def test_matches_brute_force_reference(batch, distance):
    x, y = batch
    out = MatryoshkaSimilarityLoss([1, 2, 4], weights=[2.0, 1.0, 0.5], distance=distance)(y, x)
    assert out.loss.item() == pytest.approx(
        _brute_pair(y, x, [1, 2, 4], [2.0, 1.0, 0.5], distance), rel=1e-10
    )


def test_equals_off_diagonal_mse_scaled(batch):
    x, y = batch
    b = x.shape[0]
    sx, sy = F.normalize(x, dim=1) @ F.normalize(x, dim=1).T, F.normalize(y, dim=1) @ F.normalize(y, dim=1).T
    off = ~torch.eye(b, dtype=torch.bool)
    off_mse = (sy - sx)[off].square().mean()
    assert MatryoshkaSimilarityLoss([4])(y, x).loss.item() == pytest.approx(off_mse.item() * (b - 1) / b)


def test_zero_when_similarities_are_preserved():
    torch.manual_seed(0)
    x = torch.randn(5, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    # A rotation preserves every cosine; the 8-dim prefix is the whole rotated vector.
    assert MatryoshkaSimilarityLoss([8])(x @ q, x).loss.item() == pytest.approx(0.0, abs=1e-10)


def test_loss_is_weighted_sum_of_per_dim_and_terms(batch):
    x, y = batch
    loss_fn = MatryoshkaSimilarityLoss([2, 4], weights=[3.0, 0.5], topk=2, topk_weight=0.7, pair_weight=0.2)
    out = loss_fn(y, x)
    torch.testing.assert_close(out.loss, 3.0 * out.per_dim[2] + 0.5 * out.per_dim[4])
    torch.testing.assert_close(out.loss, 0.2 * out.terms["pair"] + 0.7 * out.terms["topk"])
    assert not out.per_dim[2].requires_grad


@pytest.mark.parametrize("distance", ["mse", "l1"])
def test_topk_term_matches_brute_force(batch, distance):
    x, y = batch
    loss_fn = MatryoshkaSimilarityLoss([2, 4], topk=3, topk_weight=1.0, pair_weight=0.0, distance=distance)
    assert loss_fn(y, x).loss.item() == pytest.approx(
        _brute_topk(y, x, [2, 4], [1, 1], 3, distance), rel=1e-10
    )


def test_topk_over_whole_batch_is_off_diagonal_mean(batch):
    # k = B−1 (and any larger k, which is capped) covers every off-diagonal pair once.
    x, y = batch
    b = x.shape[0]
    pair = MatryoshkaSimilarityLoss([4])(y, x).loss
    topk = MatryoshkaSimilarityLoss([4], topk=50, topk_weight=1.0, pair_weight=0.0)(y, x).loss
    assert topk.item() == pytest.approx(pair.item() * b / (b - 1))


def test_reconstruction_is_zero_for_a_fresh_residual_adaptor_and_l1_otherwise():
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    loss_fn = MatryoshkaSimilarityLoss([2, 3], reconstruction_weight=2.0)
    out = loss_fn(Decoder(6, 3, residual=True)(x), x)
    assert out.terms["reconstruction"].item() == 0.0
    y = x[:, :3] + 0.5
    out = loss_fn(y, x)
    assert out.terms["reconstruction"].item() == pytest.approx(0.5)
    torch.testing.assert_close(out.loss, out.per_dim[2] + out.per_dim[3] + 2.0 * 0.5)
    target = torch.zeros(4, 3)
    explicit = loss_fn(y, x, reconstruction_target=target).terms["reconstruction"]
    assert explicit.item() == pytest.approx(y.abs().mean().item())


def test_n_dims_per_step_samples_a_subset():
    torch.manual_seed(0)
    x, y = torch.randn(5, 8), torch.randn(5, 8)
    loss_fn = MatryoshkaSimilarityLoss([1, 2, 4, 8], n_dims_per_step=2)
    seen = set()
    for _ in range(20):
        out = loss_fn(y, x)
        assert len(out.per_dim) == 2
        torch.testing.assert_close(out.loss, sum(out.per_dim.values()))
        seen.update(out.per_dim)
    assert seen == {1, 2, 4, 8}
    assert len(MatryoshkaSimilarityLoss([1, 2], n_dims_per_step=5)(y, x).per_dim) == 2


def test_gradients_match_finite_differences_and_skip_the_target():
    torch.manual_seed(0)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    loss_fn = MatryoshkaSimilarityLoss([2, 3], topk=2, topk_weight=0.5, reconstruction_weight=0.1)
    assert torch.autograd.gradcheck(lambda y_: loss_fn(y_, x).loss, (y,))
    loss_fn(y, x).loss.backward()
    assert x.grad is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dims": []}, r"dims must be a non-empty list of positive ints, got \[\]"),
        ({"dims": [32, 0]}, r"dims must contain positive ints only, got \[32, 0\]"),
        ({"dims": [32, 64.0]}, r"dims must contain positive ints only, got \[32, 64.0\]"),
        ({"dims": [32, 32]}, r"dims must be unique, got \[32, 32\]"),
        ({"dims": [64, 32]}, r"dims must be sorted ascending, got \[64, 32\]"),
        ({"dims": [32, 1024], "output_dim": 512}, r"dims must all be <= output_dim=512, got \[32, 1024\]"),
        ({"weights": [1.0]}, r"weights must have one entry per dim \(2\), got \[1.0\]"),
        ({"weights": [1.0, 0.0]}, r"weights must be positive numbers, got \[1.0, 0.0\]"),
        ({"n_dims_per_step": 0}, r"n_dims_per_step must be -1 \(all dims\) or a positive int, got 0"),
        ({"output_dim": 0}, r"output_dim must be a positive integer or null, got 0"),
        ({"topk": -1}, r"topk must be an integer >= 0, got -1"),
        ({"topk_weight": -0.1}, r"topk_weight must be a number >= 0, got -0.1"),
        ({"topk_weight": 0.5}, r"topk_weight=0.5 needs topk > 0"),
        ({"pair_weight": 0.0}, r"pair_weight, topk_weight and reconstruction_weight are all 0"),
        ({"distance": "cos"}, r"distance must be one of mse, l1, got 'cos'"),
    ],
)
def test_bad_config_raises_config_error(kwargs, message):
    args = {"dims": [32, 64], **kwargs}
    with pytest.raises(ConfigError, match=message):
        MatryoshkaSimilarityLoss(**args)


def test_warns_when_output_dim_is_not_trained_or_topk_is_unweighted():
    with pytest.warns(UserWarning, match=r"output_dim=512 is not in dims \[32, 64\]"):
        MatryoshkaSimilarityLoss([32, 64], output_dim=512)
    with pytest.warns(UserWarning, match=r"topk=10 has no effect with topk_weight=0.0"):
        MatryoshkaSimilarityLoss([32], topk=10)


def test_forward_shape_errors():
    loss_fn = MatryoshkaSimilarityLoss([2, 4], reconstruction_weight=1.0)
    with pytest.raises(ValueError, match=r"y has 3 columns, fewer than the largest dim 4"):
        loss_fn(torch.randn(3, 3), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"reconstruction needs x with >= 4 columns"):
        loss_fn(torch.randn(3, 4), torch.randn(3, 2))
    assert math.isfinite(loss_fn(torch.randn(3, 4), torch.randn(3, 8)).loss.item())
