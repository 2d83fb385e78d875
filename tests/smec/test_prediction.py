"""`smec predict`'s store writer: prefix-nested systems as one model, SMEC's sizes as one model each."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import torch

from datamodules.embedding import EmbeddingDataModule
from datamodules.store.combine import combine
from datamodules.store.reader import EmbeddingStore
from smec.cli import main
from smec.prediction import StorePredictionWriter
from smec.systems.smec import SMECModule
from tests.cli_harness import assert_fails_cleanly
from tests.conftest import build_store


def predict(system, store, out):
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StorePredictionWriter(str(out))],
    )
    trainer.predict(
        system, datamodule=EmbeddingDataModule(str(store), batch_size=16), return_predictions=False
    )
    return EmbeddingStore(out)


def test_a_system_whose_sizes_are_not_prefixes_is_written_one_model_per_size(tmp_path, capsys):
    """SMEC's 4-d vector is not the prefix of its 8-d one: `smec eval` must score each size as SMEC made it."""
    store = build_store(tmp_path / "store")
    L.seed_everything(0)
    system = SMECModule(
        input_dim=10, dims=[8, 4], sxbm={"enabled": False}, smrl={"epochs_per_stage": 1}, eval_dims=[4, 8]
    )
    system.compressor.set_stage(1)  # both stages started: size 4 exists (embed refuses an untrained size)
    predicted = predict(system, store, tmp_path / "pred")
    assert sorted(predicted.models) == ["smec-d4", "smec-d8"]
    source = EmbeddingStore(store)
    corpus = torch.from_numpy(combine([source.array(k, "corpus").read() for k in ("m1", "m2")]))
    system.eval()
    for dim in (4, 8):
        info = predicted.meta["models"][f"smec-d{dim}"]["model"]
        assert info["prefix_nested"] is False and info["input_dim"] == 10
        expected = system.embed(corpus, dim).detach().numpy()
        np.testing.assert_allclose(predicted.array(f"smec-d{dim}", "corpus").read(), expected, atol=1e-6)

    out = tmp_path / "eval"
    assert main(["eval", "--store", str(tmp_path / "pred"), "--out", str(out), "--no-trec"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {(r["method"], r["dim"]) for r in rows} == {
        ("smec-d4", 4),
        ("smec-d8", 8),
    }  # no prefixes of either
    assert_fails_cleanly(
        capsys,
        ["eval", "--store", tmp_path / "pred", "--out", tmp_path / "eval2", "--dims", "4"],
        expect=r"--dims \[4\]: smec-d8: one size of a system whose sizes are not prefixes \(prefix_nested: false\)",
        watch=tmp_path,
    )


def test_one_size_of_such_a_system_keeps_the_writers_name(tmp_path):
    store = build_store(tmp_path / "store")
    system = SMECModule(
        input_dim=10, dims=[8, 4], sxbm={"enabled": False}, smrl={"epochs_per_stage": 1}, predict_dim=4
    )
    system.compressor.set_stage(1)  # both stages started: size 4 exists (embed refuses an untrained size)
    predicted = predict(system, store, tmp_path / "pred")
    assert predicted.models == ["smec"] and predicted.model_dim("smec") == 4
    assert predicted.meta["models"]["smec"]["model"]["prefix_nested"] is False
