import math

import pytest
import torch

from smec.errors import ConfigError
from smec.nn.sparse_autoencoder import SparseAutoEncoder


def make(**kw):
    torch.manual_seed(0)
    return SparseAutoEncoder(6, 32, **kw)


def test_topk_keeps_exactly_the_k_largest_positive_pre_activations():
    sae = make()
    x = torch.randn(5, 6)
    pre = sae.pre_activation(x)
    z = sae.encode(x, 4)
    assert z.shape == (5, 32)
    for row, p in zip(z, pre):
        top = set(p.topk(4).indices.tolist())
        assert set(row.nonzero().flatten().tolist()) == {i for i in top if p[i] > 0}
        assert torch.equal(row[list(top)], p[list(top)].clamp_min(0))


def test_pre_activation_and_decode_follow_the_equations():
    sae = make(tied=False)
    with torch.no_grad():
        sae.pre_bias.normal_()
        sae.latent_bias.normal_()
        sae.decoder_weight_untied.normal_()
    x = torch.randn(3, 6)
    assert torch.allclose(sae.pre_activation(x), (x - sae.pre_bias) @ sae.encoder.weight.T + sae.latent_bias)
    values, indices = sae.sparse(x, 5)
    dense = torch.zeros(3, 32).scatter(1, indices, values)
    assert torch.allclose(
        sae.decode(values, indices), dense @ sae.decoder_weight_untied + sae.pre_bias, atol=1e-6
    )


def test_init_is_deterministic_tied_and_unit_norm():
    a, b = make(), make()
    assert torch.equal(a.encoder.weight, b.encoder.weight)
    assert torch.allclose(a.encoder.weight.norm(dim=1), torch.ones(32))
    assert a.decoder_weight() is a.encoder.weight
    assert a.index_bits == 5 and SparseAutoEncoder(4, 4097).index_bits == math.ceil(math.log2(4097)) == 13


def test_forward_gives_every_k_and_4k_from_one_topk_and_counts_dead_latents():
    sae = make(k_aux=8, dead_steps=1)
    x = torch.randn(4, 6)
    sae.train()
    for _ in range(3):
        out = sae(x, [2, 4])
    assert set(out.codes) == {2, 4}
    for k in (2, 4):
        assert torch.equal(out.codes[k], sae.encode(x, k))
        values, indices = sae.sparse(x, 4 * k)
        assert torch.allclose(out.reconstructions_4k[k], sae.decode(values, indices), atol=1e-6)
    fired = sae.encode(x, 4).sum(0) > 0
    assert (sae.steps_since_active[fired] == 1).all() and (sae.steps_since_active[~fired] == 3).all()
    assert torch.allclose(out.aux_target, x - out.reconstructions[4])
    assert out.aux_reconstruction.shape == (4, 6) and not out.aux_target.requires_grad


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match=r"^hidden_dim must be a positive integer, got 0$"):
        SparseAutoEncoder(6, 0)
    with pytest.raises(ConfigError, match=r"^k must be an integer in \[1, hidden_dim=32\], got 33$"):
        make().encode(torch.randn(1, 6), 33)
