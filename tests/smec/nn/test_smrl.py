import re

import pytest
import torch
import torch.nn.functional as F

from smec.errors import ConfigError
from smec.nn.ads import AdaptiveDimensionSelector
from smec.nn.smrl import (
    CompressionBlock,
    SMRLCompressor,
    SMRLSettings,
    StageSchedule,
    chain_dims,
    halving_dims,
)

DIMS = [16, 8, 4, 2]


def _similarity_loss(out: dict[int, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A small stand-in for the stage loss: match the teacher's cosine matrix at every returned size."""
    target = F.normalize(x, dim=1) @ F.normalize(x, dim=1).T
    return sum(((F.normalize(z, dim=1) @ F.normalize(z, dim=1).T - target) ** 2).mean() for z in out.values())


def _stage_params(model: SMRLCompressor, s: int) -> list[torch.nn.Parameter]:
    return [*model.blocks[s].parameters(), *model.selectors[s].parameters()]


def test_halving_dims():
    assert halving_dims(1536, 48) == [1536, 768, 384, 192, 96, 48]
    assert halving_dims(1536, 64) == [1536, 768, 384, 192, 96]
    assert SMRLCompressor(input_dim=64, min_dim=8).dims == [64, 32, 16, 8]


def test_identity_init_makes_stage_zero_start_from_truncation():
    model = SMRLCompressor(DIMS).eval()
    x = torch.randn(5, 16)
    out = model(x)
    assert list(out) == [16, 8]
    assert torch.equal(out[16], x)
    assert torch.equal(out[8], x[:, :8])  # ADS "prefix" init: eval pick is the prefix


@pytest.mark.parametrize("toggle", [True, False])
def test_frozen_stages_get_no_gradient_and_keep_exact_values(toggle):
    torch.manual_seed(0)
    model = SMRLCompressor(DIMS, ads_kwargs={"init": "uniform_noise"}, toggle_requires_grad=toggle).train()
    x = torch.randn(32, 16)
    # one optimizer over everything, with weight decay: frozen parameters must still not move
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad(set_to_none=False)  # leaves zero-filled grads behind: set_stage must clear them
        _similarity_loss(model(x), x).backward()
        opt.step()
    assert model.blocks[0].net.weight.grad is not None
    model.set_stage(1)
    frozen = [p.detach().clone() for p in _stage_params(model, 0)]
    active_before = [p.detach().clone() for p in _stage_params(model, 1)]
    for _ in range(4):
        opt.zero_grad(set_to_none=False)
        out = model(x)
        assert list(out) == [16, 8, 4]
        _similarity_loss({k: out[k] for k in (8, 4)}, x).backward()
        for p in _stage_params(model, 0):
            assert p.grad is None
        opt.step()
    for p, before in zip(_stage_params(model, 0), frozen):
        assert torch.equal(p, before)
        assert p.requires_grad is (not toggle)
    assert any(not torch.equal(p, b) for p, b in zip(_stage_params(model, 1), active_before))
    # the frozen selector stays in eval mode (deterministic pick) while the compressor trains
    assert model.training and not model.selectors[0].training and model.selectors[1].training


def test_trainable_parameters_are_the_active_stage_only():
    model = SMRLCompressor(DIMS)
    model.set_stage(2)
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in _stage_params(model, 2)}
    assert all(p.requires_grad for p in model.trainable_parameters())
    assert sum(p.requires_grad for p in model.parameters()) == len(model.trainable_parameters())


def test_shared_selection_draw_for_queries_and_documents():
    torch.manual_seed(0)
    model = SMRLCompressor(DIMS, ads_kwargs={"init": "zeros"}).train()
    q, d = torch.randn(3, 16), torch.randn(4, 16)
    selections = model.select()
    both = model(torch.cat([q, d]), selections=selections)
    assert torch.equal(model(q, selections=selections)[8], both[8][:3])
    assert torch.equal(model(d, selections=selections)[8], both[8][3:])


def test_embed_returns_each_reached_size_and_rejects_others():
    torch.manual_seed(0)
    model = SMRLCompressor(DIMS, block="mlp", residual=True).eval()
    model.set_stage(2)
    x = torch.randn(3, 16)
    out = model(x)
    assert model.available_dims == [16, 8, 4, 2]
    for dim in model.available_dims:
        assert torch.equal(model.embed(x, dim), out[dim])
        assert model.embed(x, dim).shape == (3, dim)
    model.set_stage(0)
    with pytest.raises(ValueError, match=r"^smrl has no embedding of size 4; available sizes: \[16, 8\]$"):
        model.embed(x, 4)
    # embed runs in eval mode (deterministic ADS pick) and restores every flag it found
    model.train()
    modes = [m.training for m in model.modules()]
    assert torch.equal(model.embed(x, 8), model.embed(x, 8))
    assert [m.training for m in model.modules()] == modes


def test_stage_restored_from_state_dict_reapplies_freezing():
    model = SMRLCompressor(DIMS)
    model.set_stage(2)
    restored = SMRLCompressor(DIMS)
    restored.load_state_dict(model.state_dict())
    assert restored.stage == 2
    assert [p.requires_grad for p in restored.parameters()] == [p.requires_grad for p in model.parameters()]
    restored.train()
    assert [m.training for m in restored.selectors] == [False, False, True]


def test_add_stage_on_a_restored_model():
    torch.manual_seed(0)
    model = SMRLCompressor(DIMS, ads_kwargs={"init": "uniform_noise"})
    model.set_stage(2)
    restored = SMRLCompressor(DIMS, ads_kwargs={"init": "uniform_noise"})
    restored.load_state_dict(model.state_dict())
    assert restored.add_stage(1) == 3
    assert restored.dims == [16, 8, 4, 2, 1] and restored.stage == 3
    assert {id(p) for p in restored.trainable_parameters()} == {id(p) for p in _stage_params(restored, 3)}
    assert not any(p.requires_grad for s in range(3) for p in _stage_params(restored, s))
    x = torch.randn(6, 16)
    out = restored.eval()(x)
    assert list(out) == [16, 8, 4, 2, 1]
    assert torch.equal(out[4], model.eval()(x)[4])  # earlier sizes untouched by the new stage
    # the extended checkpoint needs the extended dims
    with pytest.raises(
        RuntimeError, match=r"smrl checkpoint has dims \[16, 8, 4, 2, 1\] but this compressor"
    ):
        SMRLCompressor(DIMS).load_state_dict(restored.state_dict())
    bigger = SMRLCompressor([*DIMS, 1])
    bigger.load_state_dict(restored.state_dict())
    assert bigger.stage == 3
    with pytest.raises(ConfigError, match=r"^new_dim must be an integer in \[1, 1\), got 1$"):
        bigger.add_stage(1)


def test_prefix_selection_and_blocks():
    model = SMRLCompressor([8, 4, 2], selection="prefix", block="mlp", residual=True).train()
    x = torch.randn(2, 8)
    out = model(x)
    assert torch.equal(out[8], x) and torch.equal(out[4], x[:, :4])
    assert model.selectors[0].selected_indices().tolist() == [0, 1, 2, 3]
    assert not any(isinstance(s, AdaptiveDimensionSelector) for s in model.selectors)
    plain_mlp = CompressionBlock(4, kind="mlp", residual=False)  # cannot start as identity
    assert not torch.allclose(plain_mlp(torch.eye(4)), torch.eye(4))


def test_set_progress_reaches_the_active_selector():
    model = SMRLCompressor(DIMS, ads_kwargs={"tau_start": 1.0, "tau_end": 0.5, "schedule": "linear"})
    model.set_stage(1)
    model.set_progress(1.0)
    assert [float(s.tau) for s in model.selectors] == [1.0, 0.5, 1.0]


def test_bad_configuration_names_the_key():
    with pytest.raises(ConfigError, match=r"^dims must be strictly decreasing, got \[8, 8, 4\]$"):
        SMRLCompressor([8, 8, 4])
    with pytest.raises(ConfigError, match=r"^give either dims or input_dim \+ min_dim, not both$"):
        SMRLCompressor([8, 4], input_dim=8, min_dim=4)
    with pytest.raises(ConfigError, match=r"^give dims, or both input_dim and min_dim$"):
        SMRLCompressor(input_dim=8)
    with pytest.raises(ConfigError, match=r"^block must be one of linear, mlp, got 'conv'$"):
        SMRLCompressor([8, 4], block="conv")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^ads_kwargs must not set in_dim or k; they come from dims$"):
        SMRLCompressor([8, 4], ads_kwargs={"k": 2})
    # a selector's own arguments are named under ads. (the system adds model.)
    with pytest.raises(ConfigError, match=r"^ads\.tau_end must be a number > 0, got 0$"):
        SMRLCompressor([8, 4], ads_kwargs={"tau_end": 0})
    with pytest.raises(ConfigError, match=r"^min_dim must be an integer in \[1, input_dim=8\), got 8$"):
        halving_dims(8, 8)
    with pytest.raises(ValueError, match=r"^smrl stage must be in \[0, 2\), got 2$"):
        SMRLCompressor([8, 4, 2]).set_stage(2)


def test_stage_schedule_by_epochs_and_steps():
    by_epoch = StageSchedule(3, epochs_per_stage=[2, 1, 3])
    assert [by_epoch.stage_at(e, 0) for e in range(8)] == [0, 0, 1, 2, 2, 2, 2, 2]
    assert by_epoch.total == 6
    assert by_epoch.progress(1, 0, stage=0) == 0.5
    assert by_epoch.progress(1, 15, epoch_fraction=0.5, stage=0) == 0.75  # moves within the epoch
    assert by_epoch.progress(4, 0, stage=2) == pytest.approx(1 / 3)
    assert by_epoch.progress(0, 0, stage=2) == 0.0  # before its start: clamped
    # None: the whole budget (joint training anneals over every stage's budget at once)
    assert by_epoch.progress(3, 0, epoch_fraction=0.0) == 0.5 and by_epoch.progress(9, 0) == 1.0
    by_step = StageSchedule(2, steps_per_stage=5)
    assert [by_step.stage_at(0, s) for s in range(12)] == [0] * 5 + [1] * 7
    assert by_step.progress(0, 7, epoch_fraction=0.9, stage=1) == 0.4  # a step budget ignores the epoch
    assert by_step.progress(0, 100, stage=1) == 1.0 and by_step.progress(3, 5) == 0.5


def test_stage_schedule_never_goes_back_to_a_trained_stage():
    schedule = StageSchedule(3, epochs_per_stage=2)
    assert [schedule.advance(0, e, 0) for e in range(6)] == [0, 0, 1, 1, 2, 2]
    # a resumed fit whose schedule points to an earlier stage keeps the current one, with one warning
    with pytest.warns(UserWarning, match=r"asks for stage 0 but stage 2 is already trained; keeping stage 2"):
        assert schedule.advance(2, 0, 0) == 2
    assert schedule.advance(2, 1, 0) == 2  # warned once


def test_stage_schedule_checks_the_budget_of_loaded_stages():
    StageSchedule(3, epochs_per_stage=[0, 0, 4]).check_loaded(2)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "epochs_per_stage: the 2 stage(s) loaded from model.extend_from need budget 0 and the next one a "
            "positive budget, e.g. [0, 0, 4]"
        ),
    ):
        StageSchedule(3, epochs_per_stage=1).check_loaded(2)


def test_settings_build_the_schedule():
    assert SMRLSettings().schedule(3).budgets == [4, 4, 4]  # neither budget: 4 epochs per stage
    steps = SMRLSettings(steps_per_stage=[0, 5]).schedule(2)
    assert steps.unit == "step" and steps.budgets == [0, 5]
    with pytest.raises(ConfigError, match=r"^steps_per_stage cannot be combined with epochs_per_stage"):
        SMRLSettings(epochs_per_stage=1, steps_per_stage=1).schedule(2)


def test_chain_dims_sorts_checks_and_defaults():
    assert chain_dims(16, [2, 8, 16, 4], 2) == [16, 8, 4, 2]  # any order, D itself may be listed
    assert chain_dims(16, None, 3) == [16, 8, 4]
    for dims, message in [
        ([8, 8], "dims must be unique, got [8, 8]"),
        ([0, 4], "dims must contain positive integers only, got [0, 4]"),
        ([32, 8], "dims [32, 8]: sizes [32] are wider than the input (input_dim=16, the data's width)"),
        ([16], "dims [16]: no size is below the input (input_dim=16"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            chain_dims(16, dims, 2)
    with pytest.raises(ConfigError, match=r"^min_dim must be below input_dim=16, got 16$"):
        chain_dims(16, None, 16)
    with pytest.raises(ConfigError, match=r"^eval_dims must be unique"):
        chain_dims(16, [4, 4], 2, name="eval_dims")


def test_joint_training_trains_every_stage_at_once():
    torch.manual_seed(0)
    model = SMRLCompressor(DIMS, ads_kwargs={"tau_start": 1.0, "tau_end": 0.5}, joint=True).train()
    assert model.stage == 2 and model.available_dims == DIMS
    assert all(m.training for m in model.modules())  # nothing frozen in eval mode
    assert model.trainable_parameters() == list(model.parameters())
    model.set_progress(1.0)
    assert [float(s.tau) for s in model.selectors] == [0.5, 0.5, 0.5]
    x = torch.randn(6, 16)
    targets = model.training_targets(x, model.select())
    assert [m for m, _ in targets] == [16, 8, 8, 4, 4, 2]  # every stage's (z_s, u_{s+1})
    sum(e.square().mean() for _, e in targets).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sequential_targets_are_the_active_stage_pair():
    model = SMRLCompressor(DIMS).train()
    model.set_stage(1)
    x = torch.randn(4, 16)
    selections = model.select()
    out = model(x, selections=selections)
    targets = model.training_targets(x, selections)
    assert [m for m, _ in targets] == [8, 4]
    assert all(torch.equal(e, out[m]) for m, e in targets)


def test_load_stages_continues_a_shorter_chain():
    torch.manual_seed(0)
    short = SMRLCompressor([16, 8, 4], ads_kwargs={"init": "uniform_noise"})
    long = SMRLCompressor([16, 8, 4, 2])
    state = {f"compressor.{k}": v for k, v in short.state_dict().items()}
    assert long.load_stages(state, "compressor.") == 2
    for key, value in short.state_dict().items():
        if key.startswith(("blocks.", "selectors.")):
            assert torch.equal(long.state_dict()[key], value), key
    for chain, message in [
        (
            [16, 8],
            "trained the chain [16, 8, 4]; the chain must continue it with more sizes (e.g. dims [8, 4, 2])",
        ),
        ([16, 8, 2, 1], "trained the chain [16, 8, 4]; the chain must continue it"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            SMRLCompressor(chain).load_stages(state, "compressor.")
    with pytest.raises(
        ConfigError, match=re.escape("is not a checkpoint of an SMRL chain (no compressor.stage_dims)")
    ):
        long.load_stages({}, "compressor.")


def test_stage_schedule_validation():
    with pytest.raises(ConfigError, match=r"^give exactly one of epochs_per_stage and steps_per_stage$"):
        StageSchedule(2)
    with pytest.raises(ConfigError, match=r"^give exactly one of epochs_per_stage and steps_per_stage$"):
        StageSchedule(2, epochs_per_stage=1, steps_per_stage=1)
    with pytest.raises(ConfigError, match=r"^epochs_per_stage has 2 entries but there are 3 stages$"):
        StageSchedule(3, epochs_per_stage=[1, 2])
    with pytest.raises(
        ConfigError,
        match=r"^steps_per_stage must be positive integers, or 0 for leading stages that are already trained, got \[3, 0\]$",
    ):
        StageSchedule(2, steps_per_stage=[3, 0])


def test_pca_init_makes_the_first_block_the_orthogonal_map_onto_the_principal_axes():
    torch.manual_seed(0)
    rows = torch.randn(200, 16) * torch.linspace(0.1, 3.0, 16)  # variance grows with the index
    model = SMRLCompressor(DIMS, pca_init=True, selection="prefix")
    model.init_stage(0, rows)
    w = model.blocks[0].net.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(16), atol=1e-5) and not model.blocks[0].net.bias.any()
    z = model.embed(rows, 16)
    assert torch.allclose(
        F.cosine_similarity(z[:, None], z[None], -1),
        F.cosine_similarity(rows[:, None], rows[None], -1),
        atol=1e-5,
    )
    var = z.var(dim=0)
    assert torch.equal(var.argsort(descending=True), torch.arange(16))  # largest variance first: prefix = PCA
    again = SMRLCompressor(DIMS, pca_init=True, selection="prefix")
    again.init_stage(0, rows)
    assert torch.equal(again.blocks[0].net.weight, model.blocks[0].net.weight)  # deterministic
    with pytest.raises(ConfigError, match=r"^smrl\.init: pca needs block: linear and residual: false"):
        SMRLCompressor(DIMS, pca_init=True, block="mlp")
    with pytest.raises(ConfigError, match=r"^model\.smrl\.init must be one of identity, pca, got 'svd'$"):
        SMRLSettings(init="svd").compressor_kwargs()


def test_variance_init_of_a_later_stage_uses_its_block_input_through_the_frozen_chain():
    torch.manual_seed(0)
    rows = torch.randn(100, 16) * torch.linspace(3.0, 0.1, 16)
    model = SMRLCompressor(DIMS, ads_kwargs={"init": "variance"})
    assert model.needs_init_rows and not SMRLCompressor(DIMS).needs_init_rows
    model.init_stage(0, rows)
    assert model.selectors[0].selected_indices().tolist() == list(range(8))  # identity block: input variance
    with torch.no_grad():
        model.blocks[0].net.weight.copy_(torch.eye(16).flip(0))  # stage 0 now reverses the coordinates
    model.set_stage(1)
    model.init_stage(1, rows)
    u1 = model.forward(rows, upto=0)[8]
    expected = u1.var(dim=0).argsort(descending=True)[:4].sort().values
    assert torch.equal(model.selectors[1].selected_indices(), expected)
