import re

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from datamodules.embedding import EmbeddingDataModule
from smec.errors import ConfigError
from smec.nn.ads import AdaptiveDimensionSelector
from smec.systems.smec import SMECModule

# The tiny store concatenates m1 (6-d) and m2 (4-d): D = 10; chain 10 → 8 → 4 → 2 (3 stages).
SMALL = {"input_dim": 10, "dims": [8, 4, 2], "sxbm": {"memory_size": 64, "k": 4}}


def make(**kw):
    """SMALL with ``kw`` on top; a ``sxbm`` mapping is merged into SMALL's (a bool-like ``enabled`` stays a key)."""
    args = {**SMALL, **kw}
    if isinstance(kw.get("sxbm"), dict):
        args["sxbm"] = {**SMALL["sxbm"], **kw["sxbm"]}
    return SMECModule(**args)


def trainer(epochs, callbacks=(), **kw):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        callbacks=list(callbacks),
        num_sanity_val_steps=0,
        **kw,
    )


def datamodule(store, mode="both"):
    return EmbeddingDataModule(str(store), mode=mode, batch_size=16, block_rows=32)


def stage_params(model, s):
    return [*model.compressor.blocks[s].parameters(), *model.compressor.selectors[s].parameters()]


class Recorder(Callback):
    """Per optimizer step: epoch, stage, the optimizer's parameters, which parameters got a gradient."""

    def __init__(self):
        self.steps = []
        self.snapshots = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.steps.append(
            {
                "epoch": trainer.current_epoch,
                "stage": pl_module.stage,
                "optimizer": {id(p) for p in params},
                "with_grad": {id(p) for p in pl_module.parameters() if p.grad is not None},
                "logit_grads": [
                    None
                    if getattr(s, "logits", None) is None or s.logits.grad is None
                    else s.logits.grad.abs().sum().item()
                    for s in pl_module.compressor.selectors
                ],
            }
        )

    def on_train_epoch_end(self, trainer, pl_module):
        self.snapshots[trainer.current_epoch] = {
            k: v.detach().clone() for k, v in pl_module.compressor.state_dict().items()
        }


def test_stages_switch_freeze_earlier_blocks_and_rebuild_the_optimizer(tiny_store):
    torch.manual_seed(0)
    model = make(smrl={"epochs_per_stage": 1})
    rec = Recorder()
    trainer(3, [rec]).fit(model, datamodule=datamodule(tiny_store))
    assert model.stage == 2 and model.available_dims == (2, 4, 8, 10)
    assert [s["stage"] for s in rec.steps] == [s["epoch"] for s in rec.steps]
    for step in rec.steps:
        t = step["stage"]
        active = {id(p) for p in stage_params(model, t)}
        assert step["optimizer"] == active  # only the active stage is optimised
        assert step["with_grad"] == active  # and only it gets gradient
        assert step["logit_grads"][t] > 0  # ADS logits learn
        assert all(g is None for s, g in enumerate(step["logit_grads"]) if s != t)
    # Stage 0 is frozen from epoch 1 on, stage 1 from epoch 2 on: their values never change again.
    snaps = rec.snapshots
    for key, value in snaps[0].items():
        if key.startswith(("blocks.0.", "selectors.0.logits")):
            assert torch.equal(snaps[2][key], value), key
    for key, value in snaps[1].items():
        if key.startswith(("blocks.1.", "selectors.1.logits")):
            assert torch.equal(snaps[2][key], value), key
    # …while the stage trained in each epoch did move.
    assert not torch.equal(
        snaps[0]["blocks.0.net.weight"], make().compressor.state_dict()["blocks.0.net.weight"]
    )
    assert not torch.equal(snaps[2]["blocks.2.net.weight"], snaps[1]["blocks.2.net.weight"])
    # fit_result.json's budget: the optimizer steps each stage trained (what a report states per block)
    fit = model.trainer
    per_stage = model.budget_details(fit)["steps_per_stage"]
    assert per_stage == [fit.num_training_batches] * 3 and sum(per_stage) == fit.global_step


def test_steps_per_stage_switches_mid_epoch(tiny_store):
    torch.manual_seed(0)
    model = make(smrl={"steps_per_stage": 3})
    rec = Recorder()
    trainer(2, [rec]).fit(model, datamodule=datamodule(tiny_store))
    assert [s["stage"] for s in rec.steps][:9] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for step in rec.steps:
        assert step["optimizer"] == {id(p) for p in stage_params(model, step["stage"])}
    per_stage = model.budget_details(model.trainer)["steps_per_stage"]
    assert per_stage[:2] == [3, 3] and sum(per_stage) == model.trainer.global_step  # the last keeps the rest


def test_steps_each_stage_trained():
    from smec.nn.smrl import StageSchedule

    by_epoch = StageSchedule(3, epochs_per_stage=[2, 2, 2])
    assert by_epoch.trained_per_stage(5, 50, 10) == [20, 20, 10]  # stopped early in the last stage
    assert by_epoch.trained_per_stage(8, 80, 10) == [20, 20, 40]  # the last stage ran past its budget
    assert StageSchedule(3, steps_per_stage=4).trained_per_stage(1, 6, 100) == [4, 2, 0]
    assert make(smrl={"enabled": False}).budget_details(None) == {}  # joint: every block trains every step


def test_ads_tau_anneals_within_each_stage(tiny_store):
    taus = []

    class Tau(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            taus.append((pl_module.stage, pl_module.compressor.active_tau()))

    model = make(smrl={"epochs_per_stage": 1}, ads={"tau_start": 1.0, "tau_end": 0.1})
    trainer(2, [Tau()]).fit(model, datamodule=datamodule(tiny_store))
    # Callback hooks run before the module's own on_train_batch_start, so each value is the previous step's.
    stage0 = [tau for s, tau in taus if s == 0]
    assert stage0[0] == 1.0 and stage0 == sorted(stage0, reverse=True) and stage0[-1] < 0.5
    assert model.compressor.selectors[0].tau.item() == pytest.approx(stage0[-1], rel=0.5)
    assert [tau for s, tau in taus if s == 1][1] > stage0[-1]  # stage 1 starts its own schedule


def test_memory_fills_and_sxbm_switches_on_after_warm_up(tiny_store):
    torch.manual_seed(0)
    seen = []

    class Sxbm(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(
                (
                    trainer.global_step,
                    len(pl_module.sxbm),
                    trainer.callback_metrics["train/sxbm_active"].item(),
                )
            )

    model = make(sxbm={"memory_size": 40, "k": 20, "warmup_steps": 4}, smrl={"epochs_per_stage": 2})
    trainer(1, [Sxbm()]).fit(model, datamodule=datamodule(tiny_store))
    # filled after each step: 16, 32, 40, 40, …; on needs >= 20 entries before the step and step >= 4.
    assert [n for _, n, _ in seen][:4] == [16, 32, 40, 40]
    assert [on for _, _, on in seen][:6] == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert trainer_metric(model, "train/loss/sxbm") > 0


def trainer_metric(model, key):
    return model.trainer.callback_metrics[key].item()


@pytest.mark.parametrize(
    ("kwargs", "absent"),
    [
        ({"smrl": {"enabled": False, "epochs_per_stage": 1}}, None),
        ({"ads": {"enabled": False}}, "train/ads_tau"),
        ({"sxbm": {"enabled": False}}, "train/loss/sxbm"),
    ],
)
def test_ablations_train(tiny_store, kwargs, absent):
    torch.manual_seed(0)
    model = make(**{"smrl": {"epochs_per_stage": 1}, **kwargs})
    rec = Recorder()
    trainer(2, [rec]).fit(model, datamodule=datamodule(tiny_store))
    metrics = model.trainer.callback_metrics
    assert {"train/loss_epoch", "train/loss/pair", "train/loss/rank", "val/loss", "val/loss/d4"} <= set(
        metrics
    )
    if absent:
        assert absent not in metrics
    x = torch.randn(5, 10)
    for dim in model.available_dims:  # SMRL after 2 epochs: stages 0 and 1 (joint: every size)
        assert model.embed(x, dim).shape == (5, dim)
    if "smrl" in kwargs:
        # Joint MRL training: every stage from the first step, every parameter optimised and given gradient.
        everything = {id(p) for p in model.compressor.parameters()}
        assert all(s["optimizer"] == everything == s["with_grad"] for s in rec.steps)
        assert all(g is not None and g > 0 for s in rec.steps for g in s["logit_grads"])
        assert all(m.training for m in model.compressor.modules())
    if "ads" in kwargs:
        assert not any(isinstance(s, AdaptiveDimensionSelector) for s in model.compressor.selectors)
        assert all(torch.equal(s.selected_indices(), torch.arange(s.k)) for s in model.compressor.selectors)


def test_embed_contract_and_unreached_sizes():
    model = make()
    x = torch.randn(7, 10)
    assert model.output_dim == 10 and model.eval_dims == (2, 4, 8, 10) and not hasattr(model, "index_sets")
    assert model.available_dims == (8, 10)  # stage 0 reaches d_0 and d_1
    assert model.compress(x).shape == (7, 10)
    assert torch.equal(model.compress(x), x)  # identity init: stage 0 starts from the teacher
    # A size whose stage has not started was never trained: one clear error, not a silent prefix.
    for dim in (2, 4):
        with pytest.raises(
            ConfigError, match=re.escape(f"smec: size {dim} was never trained: this model reached")
        ):
            model.embed(x, dim)
    model.compressor.set_stage(2)
    assert model.available_dims == (2, 4, 8, 10)
    assert [model.embed(x, d).shape[1] for d in (2, 4, 8, 10)] == [2, 4, 8, 10]
    # embed runs in eval mode (deterministic ADS pick) and leaves the modes as they were
    model.train()
    assert torch.equal(model.embed(x, 2), model.embed(x, 2))
    assert model.compressor.selectors[2].training and not model.compressor.selectors[0].training
    # A size outside the chain is no size of this model: an error, not a silent prefix.
    for dim in (1, 3, 11):
        with pytest.raises(
            ValueError, match=re.escape(f"smec embeds the sizes of its chain [2, 4, 8, 10], got {dim}")
        ):
            model.embed(x, dim)


def test_default_chain_halves_down_to_min_dim():
    assert make(dims=None, min_dim=4).dims == [10, 5]
    assert SMECModule(input_dim=768).dims == [768, 384, 192, 96, 48]
    assert SMECModule(input_dim=768, min_dim=64).eval_dims == (96, 192, 384, 768)
    assert SMECModule(input_dim=768, dims=[32, 512, 768, 128]).dims == [768, 512, 128, 32]
    # A recipe's chain on a smaller input does not compress it: an error naming the sizes, no silent chain.
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "model.dims [512, 256, 128]: sizes [512] are wider than the input (input_dim=384, the data's "
            "width): the chain must compress, e.g. dims [192, 96, 48]"
        ),
    ):
        SMECModule(input_dim=384, dims=[512, 256, 128])
    with pytest.raises(ConfigError, match=re.escape("model.dims [10]: no size is below the input")):
        SMECModule(input_dim=10, dims=[10])


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_checkpoint_resume_restores_stage_ads_and_memory(tiny_store, tmp_path):
    torch.manual_seed(0)
    kw = {"smrl": {"epochs_per_stage": 2}, "sxbm": {"memory_size": 48}}
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = trainer(3, [ckpt])
    first.fit(make(**kw), datamodule=datamodule(tiny_store))  # "killed" after epoch 2 (stage 1)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    state = saved["state_dict"]
    assert int(state["compressor.active_stage"]) == 1 and int(state["sxbm.memory.filled"]) == 48

    restored = {}

    class Capture(Callback):
        def on_train_start(self, trainer, pl_module):
            restored["state"] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            restored["stage"] = pl_module.stage
            restored["optimizer"] = [p for g in trainer.optimizers[0].param_groups for p in g["params"]]

    model = make(**kw)  # fresh: stage 0, empty memory
    second = trainer(5, [Capture(), ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    second.fit(model, datamodule=datamodule(tiny_store), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert restored["stage"] == 1
    assert restored["optimizer"] == stage_params(model, 1)  # param groups rebuilt for the restored stage
    for key in ("compressor.active_stage", "compressor.selectors.0.logits", "compressor.selectors.0.tau",
                "compressor.selectors.1.logits", "compressor.selectors.1.tau", "compressor.selectors.1.progress",
                "sxbm.memory.queue", "sxbm.memory.ptr", "sxbm.memory.filled"):  # fmt: skip
        assert torch.equal(restored["state"][key], state[key]), key
    assert set(restored["state"]) == set(state)
    assert all(torch.equal(restored["state"][k], v) for k, v in state.items())
    # …and training continued: stage 1 for epoch 3, stage 2 for epoch 4, stage 0 untouched throughout.
    assert second.global_step > first.global_step and model.stage == 2
    for key in (
        "compressor.blocks.0.net.weight",
        "compressor.blocks.0.net.bias",
        "compressor.selectors.0.logits",
    ):
        assert torch.equal(model.state_dict()[key], state[key]), key
    assert not torch.equal(
        model.state_dict()["compressor.blocks.1.net.weight"], state["compressor.blocks.1.net.weight"]
    )


def test_data_mode_must_supply_what_the_loss_needs(tiny_store):
    with pytest.raises(
        ConfigError,
        match=re.escape("model.rank_weight / model.infonce_weight > 0 need (query, document) pairs"),
    ):
        trainer(1).fit(make(), datamodule=datamodule(tiny_store, mode="unsupervised"))
    # the unsupervised-only objective runs on rows
    trainer(1, limit_train_batches=2, limit_val_batches=1).fit(
        make(rank_weight=0.0), datamodule=datamodule(tiny_store, mode="unsupervised")
    )
    with pytest.raises(
        ConfigError, match=re.escape("model.pair_weight / model.topk_weight / model.sxbm need corpus rows")
    ):
        trainer(1).fit(make(), datamodule=datamodule(tiny_store, mode="supervised"))


def test_input_dim_mismatch_with_the_store(tiny_store):
    with pytest.raises(ConfigError, match=re.escape("model.input_dim=12 does not match the data")):
        trainer(1).fit(SMECModule(input_dim=12, dims=[4]), datamodule=datamodule(tiny_store))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dims": [4, 4]}, "model.dims must be unique, got [4, 4]"),
        ({"dims": [0, 4]}, "model.dims must contain positive integers only, got [0, 4]"),
        ({"dims": None, "min_dim": 10}, "model.min_dim must be below input_dim=10, got 10"),
        ({"min_dim": 0}, "model.min_dim must be a positive integer, got 0"),
        ({"block": "conv"}, "model.block must be one of linear, mlp, got 'conv'"),
        ({"hidden_dim": 0}, "model.hidden_dim must be a positive integer or null, got 0"),
        (
            {"ads": {"init": "ones"}},
            "model.ads.init must be one of prefix, uniform_noise, zeros, variance, got 'ones'",
        ),
        (
            {"ads": {"schedule": "step"}},
            "model.ads.schedule must be one of exponential, linear, cosine, got 'step'",
        ),
        ({"ads": {"tau_end": 0}}, "model.ads.tau_end must be a number > 0, got 0"),
        ({"ads": {"lr": -1.0}}, "model.ads.lr must be a number > 0, got -1.0"),
        ({"ads": {"tau": 1}}, "model.ads: unknown key(s) tau; known: enabled, init, init_scale, tau_start"),
        ({"distance": "cos"}, "model.distance must be one of mse, l1, got 'cos'"),
        ({"sxbm": {"distance": "kl"}}, "model.sxbm.distance must be one of l2, l1, smooth_l1, got 'kl'"),
        ({"sxbm": {"weight": -1}}, "model.sxbm.weight must be a number >= 0, got -1"),
        ({"rank_weight": -1}, "model.rank_weight must be a number >= 0, got -1"),
        ({"topk_weight": 0.5}, "model.topk_weight=0.5 needs topk > 0 (the number of neighbours), got topk=0"),
        ({"sxbm": {"k": 65}}, "model.sxbm.k must be an integer in [1, memory_size=64], got 65"),
        ({"sxbm": {"memory_size": 0}}, "model.sxbm.memory_size must be a positive integer, got 0"),
        ({"sxbm": {"warmup_steps": -1}}, "model.sxbm.warmup_steps must be an integer >= 0, got -1"),
        (
            {"smrl": {"epochs_per_stage": 2, "steps_per_stage": 10}},
            "model.smrl.steps_per_stage cannot be combined with epochs_per_stage (give one budget; on the command "
            'line: --model.init_args.smrl=\'{"epochs_per_stage": null, "steps_per_stage": N}\')',
        ),
        (
            {"smrl": {"epochs_per_stage": [1, 2]}},
            "model.smrl.epochs_per_stage has 2 entries but there are 3 stages",
        ),
        ({"smrl": {"steps_per_stage": 0}}, "model.smrl.steps_per_stage must be a positive integer, got 0"),
        ({"eval_dims": [4, 2]}, "model.eval_dims must be sorted ascending, got [4, 2]"),
        (
            {"eval_dims": [3, 4]},
            "model.eval_dims [3, 4]: smec cannot produce the size(s) [3] exactly; it produces the sizes of its "
            "chain [2, 4, 8, 10] (model.dims and model.input_dim)",
        ),
        ({"predict_dim": 11}, "model.predict_dim must be a size of the chain [10, 8, 4, 2] or null, got 11"),
        ({"predict_dim": 3}, "model.predict_dim must be a size of the chain [10, 8, 4, 2] or null, got 3"),
        ({"rank_temperature": 0}, "model.rank_temperature must be a number > 0, got 0"),
        (
            {"pair_weight": 0, "rank_weight": 0, "sxbm": {"enabled": False}},
            "model: pair_weight, topk_weight, rank_weight, infonce_weight and sxbm.weight are all 0 (or sxbm.enabled is false): nothing to train",
        ),
    ],
)
def test_bad_config_names_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make(**kwargs)


def test_evaluator_callback_embeds_each_size_separately(tiny_store):
    """SMEC sizes are separate vectors: the callback must score embed(x, dim), not prefixes of compress(x)."""
    from smec.evaluation.callback import RetrievalEvalCallback
    from smec.evaluation.spec import EvaluationSpec

    model = SMECModule(input_dim=10, dims=[8, 4], sxbm={"enabled": False}, smrl={"epochs_per_stage": 1})
    assert model.prefix_nested is False
    cb = RetrievalEvalCallback(EvaluationSpec(precisions=("float32",)), split="dev")
    fit = trainer(2, [cb])
    dm = EmbeddingDataModule(str(tiny_store), mode="both", batch_size=8)
    fit.fit(model, datamodule=dm)
    assert {r["dim"] for r in cb.last_rows} == set(model.eval_dims)
    assert "val/ndcg@10/mean" in fit.callback_metrics
    data = dm.eval_data("dev")

    model.eval()
    q = model.embed(torch.from_numpy(data.queries), 4).detach().numpy()
    c = model.embed(torch.from_numpy(data.corpus), 4).detach().numpy()
    (expected,) = cb._evaluator_for(data).evaluate("val", q, c, [4], ["float32"])
    (got,) = [r for r in cb.last_rows if r["dim"] == 4]
    assert got["ndcg@10"] == pytest.approx(expected["ndcg@10"])


def test_a_finished_model_is_compressed_further_by_adding_a_stage(tiny_store, tmp_path):
    torch.manual_seed(0)
    short = {"dims": [8, 4], "smrl": {"epochs_per_stage": 1}}
    first = trainer(2)
    first.fit(make(**short), datamodule=datamodule(tiny_store))
    first.save_checkpoint(tmp_path / "short.ckpt")
    old = torch.load(tmp_path / "short.ckpt", weights_only=False)["state_dict"]

    model = make(
        dims=[8, 4, 2], smrl={"epochs_per_stage": [0, 0, 1]}, extend_from=str(tmp_path / "short.ckpt")
    )
    untrained = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("compressor.blocks.2.")}
    trainer(1).fit(model, datamodule=datamodule(tiny_store))
    assert model.stage == 2
    for key, value in old.items():  # the loaded stages: exactly as trained, frozen throughout
        if key.startswith(("compressor.blocks.0.", "compressor.blocks.1.", "compressor.selectors.0.")):
            assert torch.equal(model.state_dict()[key], value), key
    assert any(
        not torch.equal(model.state_dict()[k], v) for k, v in untrained.items()
    )  # the new stage trained


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"dims": [8, 2]},
            "short.ckpt trained the chain [10, 8, 4]; the chain must continue it with more sizes (e.g. dims "
            "[8, 4, 2]), got [10, 8, 2]",
        ),
        (
            {"dims": [8, 4, 2], "smrl": {"epochs_per_stage": 1}},
            "model.smrl.epochs_per_stage: the 2 stage(s) loaded from model.extend_from need budget 0 and the next "
            "one a positive budget, e.g. [0, 0, 4]",
        ),
    ],
)
def test_extend_from_checks_the_chain_and_the_budgets(tiny_store, tmp_path, kw, message):
    first = trainer(1)
    first.fit(make(dims=[8, 4], smrl={"epochs_per_stage": 1}), datamodule=datamodule(tiny_store))
    first.save_checkpoint(tmp_path / "short.ckpt")
    model = make(**kw, extend_from=str(tmp_path / "short.ckpt"))
    with pytest.raises(ConfigError, match=re.escape(message)):
        trainer(1).fit(model, datamodule=datamodule(tiny_store))


def test_grouped_settings_are_plain_dicts_in_the_checkpoint(tiny_store, tmp_path):
    """Dataclass settings are stored as dicts: the checkpoint loads with weights_only=True and rebuilds the model."""
    from smec.losses.sxbm import SXBMSettings
    from smec.nn.smrl import SMRLSettings

    torch.manual_seed(0)
    model = SMECModule(
        input_dim=10,
        dims=[8, 4],
        smrl=SMRLSettings(epochs_per_stage=1),
        sxbm=SXBMSettings(memory_size=32, k=4),
        ads={"tau_end": 0.2},
    )
    assert model.hparams["sxbm"] == {
        "enabled": True,
        "memory_size": 32,
        "k": 4,
        "weight": 1.0,
        "distance": "l2",
        "warmup_steps": 0,
        "memory_grad": False,
    }
    assert model.hparams["ads"]["tau_end"] == 0.2 and model.hparams_initial["smrl"]["epochs_per_stage"] == 1
    fit = trainer(2)
    fit.fit(model, datamodule=datamodule(tiny_store))
    fit.save_checkpoint(tmp_path / "m.ckpt")
    saved = torch.load(tmp_path / "m.ckpt", weights_only=True)  # nothing but plain types inside
    assert saved["hyper_parameters"]["smrl"] == {
        "enabled": True,
        "epochs_per_stage": 1,
        "steps_per_stage": None,
        "init": "identity",
        "init_sample": 4096,
    }
    restored = SMECModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert restored.sxbm.memory.size == 32 and restored.sxbm.k == 4 and restored.stage == 1
    x = torch.randn(3, 10)
    assert all(torch.equal(restored.embed(x, d), model.embed(x, d)) for d in (4, 8, 10))


def test_the_dims_contract():
    # trained sizes = dims, else eval_dims, else halving; eval sizes = eval_dims, else the whole chain
    assert SMECModule(input_dim=64, eval_dims=[8, 16, 64]).dims == [64, 16, 8]
    model = SMECModule(input_dim=64, dims=[32, 16, 8], eval_dims=[16, 32])
    assert model.dims == [64, 32, 16, 8] and model.eval_dims == (16, 32)
    assert SMECModule(input_dim=64, min_dim=16).eval_dims == (16, 32, 64)
    # the chain from eval_dims is checked as eval_dims
    message = "model.eval_dims [64]: no size is below the input (input_dim=64, the data's width)"
    with pytest.raises(ConfigError, match=re.escape(message)):
        SMECModule(input_dim=64, eval_dims=[64])


def test_dev_selection_only_once_the_last_stage_has_started(tiny_store, tmp_path):
    """The standard callbacks: the monitor is -inf before SMRL's last stage (it cannot win, EarlyStopping with
    patience 1 neither stops on it nor counts it), then the mean over the target sizes (not D = 10)."""
    from smec.evaluation.spec import EvaluationSpec
    from smec.fit_callbacks import FitCallbacks

    seen = []

    class Monitor(Callback):
        def on_validation_end(self, trainer, pl_module):
            m = trainer.callback_metrics
            sizes = [
                float(m[f"val/ndcg@10/d{d}/float32"]) for d in (2, 4, 8) if f"val/ndcg@10/d{d}/float32" in m
            ]
            seen.append((pl_module.stage, float(m["val/ndcg@10/mean"]), sizes))

    torch.manual_seed(0)
    model = make(smrl={"epochs_per_stage": 1}, sxbm={"enabled": False})
    callbacks = FitCallbacks(patience=1).build(EvaluationSpec(precisions=("float32",)))
    fit = trainer(4, [*callbacks, Monitor()], default_root_dir=tmp_path)
    fit.fit(model, datamodule=datamodule(tiny_store))
    assert [(stage, value) for stage, value, _ in seen[:2]] == [(0, -float("inf")), (1, -float("inf"))]
    assert [stage for stage, _, _ in seen] == [0, 1, 2, 2]  # not stopped before the last stage
    for _, value, sizes in seen[2:]:
        assert value == pytest.approx(sum(sizes) / 3)  # sizes 2, 4, 8: the input width 10 is left out
    best = next(c for c in fit.checkpoint_callbacks if c.monitor == "val/ndcg@10/mean")
    selected = SMECModule.load_from_checkpoint(best.best_model_path, weights_only=True)
    assert selected.stage == 2 and float(best.best_model_score) > -float("inf")


def test_options_where_the_paper_is_silent_train_together(tiny_store):
    """PCA first block and ADS variance logits fitted on the training rows at fit start (and each stage's logits
    at its start), λ and K per stage, gradient through the memory side, a noise-free end phase."""
    from smec.nn.smrl import principal_axes
    from smec.sampling import corpus_sample

    started = {}

    class Capture(Callback):
        def on_train_start(self, trainer, pl_module):
            started["w"] = pl_module.compressor.blocks[0].net.weight.detach().clone()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # after the stage switch
            if batch_idx == 0:
                selector = pl_module.compressor.selectors[pl_module.stage]
                started[trainer.current_epoch] = selector.logits.detach().clone()

    torch.manual_seed(0)
    model = make(
        smrl={"epochs_per_stage": 1, "init": "pca"},
        ads={"init": "variance", "fixed_fraction": 0.5},
        sxbm={"memory_grad": True, "k": [4, 2, 2], "weight": [1.0, 0.0, 0.5]},
    )
    dm = datamodule(tiny_store)
    trainer(2, [Capture()]).fit(model, datamodule=dm)
    rows = corpus_sample(dm, 4096)
    assert torch.allclose(started["w"], principal_axes(rows))  # fitted on the corpus rows, at fit start
    assert (
        started[0].tolist() == torch.linspace(1.0, -1.0, 10).tolist()
    )  # PCA output: variance order = prefix
    assert sorted(started[1].tolist()) == sorted(torch.linspace(1.0, -1.0, 8).tolist())  # a ranked ramp
    assert model.sxbm.ks == [4, 2, 2] and model.sxbm.weights == [1.0, 0.0, 0.5] and model.sxbm.memory_grad
    with pytest.raises(ConfigError, match=r"^model\.sxbm\.weight has 2 entries but there are 3 stages"):
        make(sxbm={"weight": [1.0, 1.0]})
