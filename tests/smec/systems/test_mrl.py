import re

import lightning as L
import pytest
import torch

from datamodules.embedding import EmbeddingDataModule
from smec.errors import ConfigError
from smec.systems.mrl import MRLDecoderModule


def fit(store, model, epochs=3, **trainer_kw):
    dm = EmbeddingDataModule(str(store), batch_size=16, block_rows=32)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kw,
    )
    trainer.fit(model, datamodule=dm)
    return trainer


def test_training_lowers_the_similarity_loss(tiny_store):
    torch.manual_seed(0)
    model = MRLDecoderModule(input_dim=10, output_dim=8, dims=[2, 4, 8], lr=3e-3)
    dm = EmbeddingDataModule(str(tiny_store), batch_size=64, normalization="l2-concat-l2")
    x = torch.from_numpy(dm.eval_data("dev").corpus)
    before = model.loss_fn(model.compress(x), x).loss.item()
    trainer = fit(tiny_store, model, epochs=15)
    model.eval()
    with torch.no_grad():
        after = model.loss_fn(model.compress(x), x).loss.item()
    assert after < 0.7 * before
    assert trainer.global_step > 0
    assert {"train/loss_epoch", "train/loss/d8", "val/loss", "val/loss/d2"} <= set(trainer.callback_metrics)


def test_compress_shapes(tiny_store):
    model = MRLDecoderModule(input_dim=10, output_dim=8, dims=[4, 8])
    y = model.compress(torch.randn(5, 10))
    assert y.shape == (5, 8)
    assert model.embed(torch.randn(5, 10), 4).shape == (5, 4)
    assert not hasattr(model, "index_sets") and model.eval_dims == (4, 8)


def test_input_dim_mismatch_with_the_store_fails_before_training(tiny_store):
    model = MRLDecoderModule(input_dim=12, output_dim=8, dims=[4, 8])
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "model.input_dim=12 does not match the data: the store's models ['m1', 'm2'] concatenate to 10 dims"
        ),
    ):
        fit(tiny_store, model, epochs=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dims": [32, 1024], "output_dim": 512}, "model.dims must all be <= output_dim=512, got [32, 1024]"),
        ({"dims": []}, "model.dims must be a non-empty list of positive ints, got []"),
        ({"dims": [64, 32]}, "model.dims must be sorted ascending, got [64, 32]"),
        ({"dims": [32, 64], "weights": [1.0]}, "model.weights must have one entry per dim (2), got [1.0]"),
        (
            {"arch": "transformer"},
            "model.arch must be one of linear, simple_encoder, encoder_only, got 'transformer'",
        ),
        (
            {"dims": [8, 16], "eval_dims": [8, 12]},
            "model.eval_dims [8, 12]: mrl cannot produce the size(s) [12] exactly; it produces its trained prefix "
            "sizes model.dims [8, 16]",
        ),
        ({"eval_dims": [16, 8]}, "model.eval_dims must be sorted ascending, got [16, 8]"),
        ({"dropout": 1.5}, "model.dropout must be a float in [0, 1), got 1.5"),
    ],
)
def test_bad_config_names_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        MRLDecoderModule(input_dim=64, **kwargs)


def test_pca_init_starts_at_pca_of_the_corpus(tiny_store):
    """init_from=pca: before any step, the decoder output is the centred PCA projection of the LayerNorm input."""
    torch.manual_seed(0)
    model = MRLDecoderModule(input_dim=10, output_dim=4, dims=[2, 4], init_from="pca", lr=0.0)
    fit(tiny_store, model, epochs=1)  # lr 0: the weights stay where on_fit_start put them
    dm = EmbeddingDataModule(str(tiny_store))
    x = torch.from_numpy(dm.eval_data("dev").corpus)
    h = model.decoder.net[0](x)
    centred = h - h.mean(0)
    _, s, _ = torch.linalg.svd(centred, full_matrices=False)
    y = model.compress(x).detach()
    # same subspace as the top-4 principal directions, variance in decreasing order along the outputs
    torch.testing.assert_close(y.var(0), (s[:4] ** 2) / (len(x) - 1), rtol=1e-3, atol=1e-5)
    assert torch.allclose(y.mean(0), torch.zeros(4), atol=1e-4)


def test_unknown_init_from():
    with pytest.raises(ConfigError, match=re.escape("model.init_from must be one of null, pca, got 'svd'")):
        MRLDecoderModule(input_dim=10, output_dim=4, dims=[4], init_from="svd")


def test_an_output_wider_than_the_input_is_refused():
    """The recipe's 512-d decoder on a 64-d store would expand, not compress."""
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "model.output_dim=512 is wider than the input (model.input_dim=64, the data's width): set "
            "model.init_args.output_dim and dims to at most 64"
        ),
    ):
        MRLDecoderModule(input_dim=64)
    assert MRLDecoderModule(input_dim=8, output_dim=8, dims=[4, 8]).output_dim == 8  # as wide: allowed


def test_the_dims_contract():
    # trained sizes: dims, else eval_dims, else 32..512; the decoder is as wide as the largest trained size
    default = MRLDecoderModule(input_dim=1024)
    assert default.loss_fn.dims == (32, 64, 128, 256, 512) and default.output_dim == 512
    assert default.eval_dims == (32, 64, 128, 256, 512)
    from_eval = MRLDecoderModule(input_dim=64, eval_dims=[8, 16])
    assert from_eval.loss_fn.dims == (8, 16) and from_eval.output_dim == 16 and from_eval.eval_dims == (8, 16)
    both = MRLDecoderModule(input_dim=64, dims=[8, 16, 32], eval_dims=[16])
    assert both.output_dim == 32 and both.eval_dims == (16,)
