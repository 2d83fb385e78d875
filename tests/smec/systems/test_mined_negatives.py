"""Every trainable system passes the batch's mined hard negatives (``data.negatives``) to its rank term."""

import lightning as L
import pytest
import torch

from datamodules.embedding import EmbeddingDataModule
from datamodules.negatives import MiningSpec
from smec.systems.adaptors import MatryoshkaAdaptorModule, SearchAdaptorModule
from smec.systems.mrl import MRLDecoderModule
from smec.systems.smec import SMECModule

# The tiny store concatenates m1 (6-d) and m2 (4-d): D = 10.
SYSTEMS = {
    "mrl": lambda: MRLDecoderModule(
        input_dim=10, output_dim=8, dims=[4, 8], rank_weight=1.0, pair_weight=0.1
    ),
    "smec": lambda: SMECModule(
        input_dim=10, dims=[8, 4], sxbm={"memory_size": 64, "k": 4}, rank_weight=1.0, pair_weight=0.1
    ),
    "smec-infonce": lambda: SMECModule(
        input_dim=10, dims=[8, 4], sxbm={"enabled": False}, rank_weight=0.0, infonce_weight=1.0
    ),
    "matryoshka-adaptor": lambda: MatryoshkaAdaptorModule(input_dim=10, dims=[4, 10], unsupervised_epochs=0),
    "search-adaptor": lambda: SearchAdaptorModule(input_dim=10),
}


def datamodule(store, negatives=True):
    spec = MiningSpec(num_negatives=3) if negatives else None
    return EmbeddingDataModule(str(store), mode="both", batch_size=16, block_rows=32, negatives=spec)


def first_batch(dm):
    dm.prepare_data()
    dm.setup("fit")
    return dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_a_fit_with_mined_negatives_trains_and_the_negatives_reach_the_loss(tiny_store, name):
    torch.manual_seed(0)
    model = SYSTEMS[name]()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule(tiny_store))
    assert trainer.global_step > 0 and torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
    model._trainer = None  # the steps below run outside the fit (its loop no longer collects logs)
    if isinstance(model, MatryoshkaAdaptorModule):
        assert model._stage == 2  # the fit trained the supervised stage
    batch = first_batch(datamodule(tiny_store))
    assert batch["n"].shape == (16, 3, 10) and bool(batch["n_mask"].any())
    negatives = batch["n"].clone().requires_grad_()
    with_negatives = model.training_step({**batch, "n": negatives}, 0)
    (grad,) = torch.autograd.grad(with_negatives, negatives)
    assert torch.count_nonzero(grad[batch["n_mask"]]) > 0  # the real negatives move the loss
    assert torch.count_nonzero(grad[~batch["n_mask"]]) == 0  # a padding slot does not
    without = model.training_step({k: v for k, v in batch.items() if k not in ("n", "n_mask")}, 0)
    assert not torch.isclose(with_negatives, without)


# Not search-adaptor: its L_rec covers every row it adapts, the negatives' too, padding or not.
@pytest.mark.parametrize("name", sorted(set(SYSTEMS) - {"search-adaptor"}))
def test_negatives_that_are_all_padding_give_the_in_batch_loss(tiny_store, name):
    model = SYSTEMS[name]()
    if isinstance(model, MatryoshkaAdaptorModule):
        model._stage = 2
        model.use_corpus(datamodule(tiny_store).eval_data().corpus)  # no fit hands it over here
    batch = first_batch(datamodule(tiny_store))
    plain = {k: v for k, v in batch.items() if k not in ("n", "n_mask")}
    torch.manual_seed(1)  # the same ADS draw for both steps
    expected = model.training_step(plain, 0)
    torch.manual_seed(1)
    padded = model.training_step({**batch, "n_mask": torch.zeros_like(batch["n_mask"])}, 0)
    torch.testing.assert_close(padded, expected)


def test_mrl_without_a_rank_term_is_bit_identical_to_the_paper_loss(tiny_store):
    batch = first_batch(datamodule(tiny_store))
    torch.manual_seed(0)
    plain = MRLDecoderModule(input_dim=10, output_dim=8, dims=[4, 8])
    torch.manual_seed(0)
    zero = MRLDecoderModule(input_dim=10, output_dim=8, dims=[4, 8], rank_weight=0.0, pair_weight=1.0)
    expected = plain.loss_fn(plain.decoder(batch["x"]), batch["x"]).loss
    assert torch.equal(plain.training_step(batch, 0), expected)
    assert torch.equal(zero.training_step(batch, 0), expected)
