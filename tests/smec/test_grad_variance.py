import re

import lightning as L
import pytest
import torch

from datamodules.embedding import EmbeddingDataModule
from smec.errors import ConfigError
from smec.experiment.plots import plot_grad_variance, read_grad_variance
from smec.fit_callbacks import FitCallbacks
from smec.grad_variance import GradVariance
from smec.loggers import SmecCSVLogger
from smec.systems.smec import SMECModule

KEY = "train/grad_var/compressor.blocks.0"


def _fit(store, root, joint):
    torch.manual_seed(0)
    model = SMECModule(
        input_dim=10, dims=[8, 4], sxbm={"enabled": False}, smrl={"enabled": not joint, "epochs_per_stage": 1}
    )
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=SmecCSVLogger(save_dir=str(root), name="csv"),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=[GradVariance("compressor.blocks.0")],
    )
    trainer.fit(model, datamodule=EmbeddingDataModule(str(store), mode="both", batch_size=16, block_rows=32))
    return trainer


def test_the_shared_layers_gradient_variance_is_logged_per_step_and_plotted(tiny_store, tmp_path):
    smrl, joint = (
        _fit(tiny_store, tmp_path / "smrl", joint=False),
        _fit(tiny_store, tmp_path / "joint", joint=True),
    )
    steps_per_epoch = joint.num_training_batches
    series = {name: read_grad_variance(tmp_path / name)[KEY] for name in ("smrl", "joint")}
    # Joint training: block 0 gets gradient every step; SMRL: only in stage 0 (epoch 0), then it is frozen.
    assert sorted(series["joint"]) == list(range(2 * steps_per_epoch))
    assert sorted(series["smrl"]) == list(range(steps_per_epoch))
    assert series["joint"][0] == 0.0 and all(v > 0 for s, v in series["joint"].items() if s > 0)
    assert f"{KEY}/sq_norm" in smrl.logged_metrics or f"{KEY}/sq_norm" in smrl.callback_metrics
    out = plot_grad_variance({"smec": tmp_path / "smrl", "no-smrl": tmp_path / "joint"}, tmp_path / "gv.png")
    assert out is not None and out.stat().st_size > 0
    assert plot_grad_variance({"none": tmp_path / "missing"}, tmp_path / "none.png") is None


def test_off_by_default_and_bad_settings():
    from smec.evaluation.spec import EvaluationSpec

    spec = EvaluationSpec()
    assert not any(isinstance(c, GradVariance) for c in FitCallbacks().build(spec))
    (gv,) = [c for c in FitCallbacks(grad_variance="decoder.net").build(spec) if isinstance(c, GradVariance)]
    assert gv.module == "decoder.net"
    with pytest.raises(
        ConfigError, match=re.escape("fit_callbacks.grad_variance: beta must be in [0, 1), got 1")
    ):
        GradVariance(beta=1)
    model = SMECModule(input_dim=10, dims=[8, 4])
    with pytest.raises(ConfigError, match=re.escape("SMECModule has no submodule 'decoder'")):
        GradVariance("decoder").on_fit_start(None, model)


def test_the_report_shows_the_diagnostic_when_a_fit_logged_it(tiny_store, tmp_path):
    from types import SimpleNamespace

    from smec.experiment.report import write_report

    _fit(tiny_store, tmp_path / "smec" / "s0", joint=False)
    (tmp_path / "mrl" / "s0").mkdir(parents=True)  # a fit without the metric: left out of the plot
    config = SimpleNamespace(
        name="t",
        dataset="d",
        split="test",
        models=("m1", "m2"),
        reference_models=(),
        method_names=["smec", "mrl"],
        reference=None,
    )
    rows = [
        {
            "method": m,
            "dim": 4,
            "precision": "float32",
            "bits": 128,
            "compression": 2.5,
            "seed": 0,
            "ndcg@10": v,
            "per_query": [v, v],
        }
        for m, v in (("smec", 0.5), ("mrl", 0.4), ("concat", 0.3))
    ]
    runs = [("smec", 0, tmp_path / "smec" / "s0"), ("mrl", 0, tmp_path / "mrl" / "s0")]
    paths = write_report(config, rows, 10, tmp_path, runs)
    assert paths["grad_variance"].stat().st_size > 0
    assert (
        "![Gradient variance of the shared layer per step](grad_variance.png)" in paths["report"].read_text()
    )
