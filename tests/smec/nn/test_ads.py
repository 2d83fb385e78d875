import math

import pytest
import torch

from smec.errors import ConfigError
from smec.nn.ads import AdaptiveDimensionSelector, ADSSettings


def _trained(seed: int = 0, **kwargs) -> AdaptiveDimensionSelector:
    torch.manual_seed(seed)
    return AdaptiveDimensionSelector(12, 5, **kwargs)


def test_training_pick_is_k_distinct_ascending_indices_and_values_match():
    ads = _trained(init="uniform_noise")
    x = torch.randn(3, 12)
    torch.manual_seed(1)
    values, idx = ads(x)
    assert values.shape == (3, 5) and idx.shape == (5,)
    assert idx.unique().numel() == 5
    assert torch.equal(idx, idx.sort().values)
    assert torch.allclose(values, x[:, idx], atol=1e-6)  # hard mask forward value is 1 on kept coordinates


def test_training_pick_is_reproducible_with_seed_or_generator():
    ads = _trained(init="zeros")
    torch.manual_seed(3)
    a = ads.select().indices
    torch.manual_seed(3)
    b = ads.select().indices
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(ads.select(g1).indices, ads.select(g2).indices)
    # the noise explores: 20 draws from equal logits do not all agree
    picks = {tuple(ads.select(g1).indices.tolist()) for _ in range(20)}
    assert len(picks) > 1


@pytest.mark.parametrize("relaxation", ["sigmoid", "softmax"])
def test_gradients_reach_the_logits(relaxation):
    ads = _trained(init="uniform_noise", relaxation=relaxation)
    x = torch.randn(4, 12)
    values, idx = ads(x)
    (values**2).sum().backward()
    grad = ads.logits.grad
    assert grad is not None
    assert grad[idx].abs().min() > 0  # every kept coordinate's logit gets a signal


def test_masked_full_vector_gives_gradient_to_dropped_logits():
    ads = _trained(init="uniform_noise")
    x = torch.randn(4, 12)
    selection = ads.select()
    target = torch.randn(4, 12)
    # a loss on the full masked vector (zeros at dropped coordinates) reaches every logit
    ((x * selection.mask - target) ** 2).sum().backward()
    dropped = torch.ones(12, dtype=torch.bool)
    dropped[selection.indices] = False
    assert ads.logits.grad[dropped].abs().min() > 0


def test_eval_is_deterministic_top_k_of_logits():
    ads = _trained(init="uniform_noise").eval()
    x = torch.randn(2, 12)
    expected = torch.topk(ads.logits.detach(), 5).indices.sort().values
    v1, i1 = ads(x)
    v2, i2 = ads(x)
    assert torch.equal(i1, expected) and torch.equal(i2, expected)
    assert torch.equal(ads.selected_indices(), expected)
    assert torch.equal(v1, x[:, expected]) and torch.equal(v1, v2)


def test_prefix_init_picks_the_prefix_and_zero_noise_training_equals_eval():
    ads = AdaptiveDimensionSelector(10, 4, init="prefix", gumbel_scale=0.0)
    assert ads.selected_indices().tolist() == [0, 1, 2, 3]
    assert ads.select().indices.tolist() == [0, 1, 2, 3]  # training mode, no noise
    assert AdaptiveDimensionSelector(10, 4, init="zeros").selected_indices().tolist() == [0, 1, 2, 3]


def test_soft_mask_when_not_hard():
    ads = _trained(init="uniform_noise", hard=False)
    x = torch.randn(2, 12)
    selection = ads.select()
    values = ads.apply(x, selection)
    assert torch.all((selection.mask > 0) & (selection.mask < 1))
    assert torch.allclose(values, x[:, selection.indices] * selection.mask[selection.indices])


@pytest.mark.parametrize(
    ("schedule", "midpoint"),
    [("exponential", math.sqrt(2.0 * 0.02)), ("linear", 1.01), ("cosine", 1.01)],
)
def test_temperature_schedule_endpoints_and_midpoint(schedule, midpoint):
    ads = AdaptiveDimensionSelector(8, 4, tau_start=2.0, tau_end=0.02, schedule=schedule)
    assert float(ads.tau) == pytest.approx(2.0)
    ads.set_progress(0.5)
    assert float(ads.tau) == pytest.approx(midpoint)
    ads.set_progress(1.0)
    assert float(ads.tau) == pytest.approx(0.02)
    ads.set_progress(0.0)
    assert float(ads.tau) == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"^ads progress must be in \[0, 1\], got 1.5$"):
        ads.set_progress(1.5)


def test_state_dict_round_trip_restores_logits_and_tau():
    ads = _trained(init="uniform_noise")
    ads.set_progress(0.3)
    with torch.no_grad():
        ads.logits.add_(torch.randn(12))
    restored = AdaptiveDimensionSelector(12, 5)
    restored.load_state_dict(ads.state_dict())
    assert set(ads.state_dict()) == {"logits", "tau", "progress"}
    assert torch.equal(restored.logits, ads.logits)
    assert torch.equal(restored.tau, ads.tau) and float(restored.tau) < 1.0
    assert float(restored.progress) == pytest.approx(0.3)
    assert torch.equal(restored.selected_indices(), ads.selected_indices())


def test_settings_carry_smecs_defaults_and_the_selector_arguments():
    settings = ADSSettings()
    # SMEC anneals the noise with τ (the component's default does not); lr None means 10 × the model's lr.
    assert settings.enabled and settings.anneal_noise and settings.lr is None
    kwargs = settings.selector_kwargs()
    assert kwargs == {
        "init": "prefix",
        "init_scale": 1.0,
        "tau_start": 1.0,
        "tau_end": 0.1,
        "schedule": "exponential",
        "gumbel_scale": 1.0,
        "anneal_noise": True,
        "fixed_fraction": 0.0,
    }
    assert AdaptiveDimensionSelector(8, 4, **kwargs).anneal_noise


def test_bad_configuration_names_the_key():
    with pytest.raises(ConfigError, match=r"^k must be an integer in \[1, in_dim=8\], got 9$"):
        AdaptiveDimensionSelector(8, 9)
    with pytest.raises(
        ConfigError, match=r"^init must be one of prefix, uniform_noise, zeros, variance, got 'x'$"
    ):
        AdaptiveDimensionSelector(8, 4, init="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^tau_end must be a number > 0, got 0$"):
        AdaptiveDimensionSelector(8, 4, tau_end=0)
    with pytest.raises(ConfigError, match=r"^gumbel_scale must be a number >= 0, got -1$"):
        AdaptiveDimensionSelector(8, 4, gumbel_scale=-1)
    with pytest.raises(ConfigError, match=r"^relaxation must be one of sigmoid, softmax, got 'gauss'$"):
        AdaptiveDimensionSelector(8, 4, relaxation="gauss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^ads expects inputs with last dimension 8, got \(2, 7\)$"):
        AdaptiveDimensionSelector(8, 4)(torch.ones(2, 7))


def test_variance_init_ranks_the_logits_by_variance():
    ads = AdaptiveDimensionSelector(6, 3, init="variance", init_scale=2.0)
    assert torch.equal(ads.logits.detach(), torch.linspace(2.0, -2.0, 6))  # the prefix init until data comes
    ads.init_from_variance(torch.tensor([0.1, 5.0, 0.3, 5.0, 9.0, 0.0]))
    # Largest variance first (ties: lower index first), with the prefix init's values.
    assert ads.logits.detach().tolist() == pytest.approx([-1.2, 1.2, -0.4, 0.4, 2.0, -2.0])
    assert ads.selected_indices().tolist() == [1, 3, 4]
    with pytest.raises(ValueError, match=r"^ads variance must have shape \(6,\), got \(5,\)$"):
        ads.init_from_variance(torch.ones(5))


def test_the_noise_free_end_phase_trains_on_the_eval_pick():
    ads = _trained(init="uniform_noise", fixed_fraction=0.25, tau_start=1.0, tau_end=0.1)
    ads.train()
    ads.set_progress(0.5)
    assert not ads.fixed and float(ads.tau) == pytest.approx(ads.tau_at(0.5 / 0.75))
    torch.manual_seed(0)
    picks = {tuple(ads.select().indices.tolist()) for _ in range(20)}
    assert len(picks) > 1  # Gumbel exploration before the end phase
    ads.set_progress(0.75)  # τ has finished annealing where the end phase starts
    assert ads.fixed and float(ads.tau) == pytest.approx(0.1)
    for _ in range(5):
        sel = ads.select()
        assert torch.equal(sel.indices, ads.selected_indices()) and not sel.mask.requires_grad
    assert not AdaptiveDimensionSelector(8, 4).fixed  # default 0: no end phase, even at progress 1
    with pytest.raises(ConfigError, match=r"^fixed_fraction must be a number in \[0, 1\), got 1$"):
        AdaptiveDimensionSelector(8, 4, fixed_fraction=1)
