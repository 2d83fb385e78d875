import pytest
import torch
import torch.nn.functional as F

from smec.errors import ConfigError
from smec.losses.csr import CSRLoss, normalized_mse, sparse_contrastive
from smec.nn.sparse_autoencoder import SparseAutoEncoderOutput


def output(x, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = {k: torch.randn(x.shape, generator=g) for k in (2, 4)}
    r4 = {k: torch.randn(x.shape, generator=g) for k in (2, 4)}
    codes = {k: torch.rand(x.shape[0], 8, generator=g) for k in (2, 4)}
    return SparseAutoEncoderOutput(
        codes, r, r4, torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    )


def test_the_total_is_the_equation():
    x = torch.randn(4, 3)
    out = output(x)
    zq, zd = torch.rand(4, 8), torch.rand(4, 8)
    pairs = {2: (zq, zd), 4: (zd, zq)}
    loss = CSRLoss([2, 4], weights=[1.0, 2.0], aux_weight=0.5, contrastive_weight=0.25)(x, out, pairs)
    per_k = {
        k: ((out.reconstructions[k] - x) ** 2).mean()
        + ((out.reconstructions_4k[k] - x) ** 2).mean() / 8
        + 0.25 * -torch.log_softmax(pairs[k][0] @ pairs[k][1].T, 1).diagonal().mean()
        for k in (2, 4)
    }
    t = out.aux_target
    nmse = ((out.aux_reconstruction - t) ** 2).mean() / ((t - t.mean(0)) ** 2).mean()
    assert torch.allclose(loss.loss, per_k[2] + 2 * per_k[4] + 0.5 * nmse)
    assert torch.allclose(loss.per_dim[4], per_k[4])
    assert set(loss.terms) == {"reconstruction", "reconstruction_4k", "contrastive", "aux"}


def test_pieces():
    t = torch.tensor([[1.0, 2.0], [3.0, 2.0]])
    assert torch.allclose(normalized_mse(t + 1, t), torch.tensor(1.0 / 0.5))
    assert normalized_mse(torch.zeros(2, 2), torch.ones(2, 2)) == 1.0  # no batch variance: plain MSE
    z = torch.eye(3)
    assert torch.allclose(sparse_contrastive(z, z, scale=2.0), F.cross_entropy(2 * z, torch.arange(3)))


def test_without_contrastive_or_aux_no_pairs_are_needed():
    x = torch.randn(4, 3)
    loss = CSRLoss([2, 4], aux_weight=0.0, contrastive_weight=0.0)(x, output(x))
    assert set(loss.terms) == {"reconstruction", "reconstruction_4k"}
    with pytest.raises(ValueError, match="contrastive_weight > 0 needs"):
        CSRLoss([2, 4])(x, output(x))
    with pytest.raises(ValueError, match=r"no reconstruction at k=\[8\]"):
        CSRLoss([8], contrastive_weight=0.0)(x, output(x))


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match=r"^ks must be sorted ascending, got \[4, 2\]$"):
        CSRLoss([4, 2])
    with pytest.raises(ConfigError, match=r"^aux_weight must be a number >= 0, got -1$"):
        CSRLoss([2], aux_weight=-1)
