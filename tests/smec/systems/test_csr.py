import re

import lightning as L
import numpy as np
import pytest
import torch

from datamodules.embedding import EmbeddingDataModule
from smec.checkpoint import load_system
from smec.errors import ConfigError
from smec.evaluation.grid import evaluate_system
from smec.evaluation.sparse import dequantize_values, sparse_bits
from smec.evaluation.spec import EvaluationSpec
from smec.systems.csr import CSRModule


def trainer(tmp_path, epochs=1):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_one_epoch_fit_with_pairs_then_the_checkpoint_restores_the_system(tiny_store, tmp_path):
    torch.manual_seed(0)
    model = CSRModule(input_dim=10, hidden_dim=40, dims=[2, 4], k_aux=8)
    dm = EmbeddingDataModule(str(tiny_store), batch_size=16, block_rows=32, mode="both")
    t = trainer(tmp_path)
    t.fit(model, datamodule=dm)
    assert t.global_step > 0
    assert {"train/loss_epoch", "train/contrastive", "train/aux", "val/loss", "val/loss/d2"} <= set(
        t.callback_metrics
    )
    path = tmp_path / "csr.ckpt"
    t.save_checkpoint(path)
    restored = load_system(path, "--ckpt", class_path="smec.systems.csr.CSRModule")
    x = torch.randn(3, 10)
    assert torch.equal(restored.embed(x, 4), model.eval().embed(x, 4))


def test_contrastive_training_needs_pairs(tiny_store, tmp_path):
    model = CSRModule(input_dim=10, hidden_dim=40, dims=[2, 4])
    dm = EmbeddingDataModule(str(tiny_store), batch_size=16, block_rows=32)
    with pytest.raises(
        ConfigError, match=re.escape("needs (query, document) pairs and rows: data.mode both")
    ):
        trainer(tmp_path).fit(model, datamodule=dm)


def test_embed_has_exactly_k_non_zeros_of_the_dictionary_width():
    torch.manual_seed(0)
    model = CSRModule(input_dim=10, hidden_dim=64, dims=[2, 8])
    z = model.embed(torch.randn(20, 10), 8)
    assert z.shape == (20, 64) and ((z > 0).sum(1) == 8).all()
    assert model.compress(torch.randn(2, 10)).shape == (2, 64) and model.eval_dims == (2, 8)


def test_the_dims_contract():
    assert CSRModule(input_dim=16).ks == (8, 16, 32, 64)  # hidden_dim 4 x 16
    assert CSRModule(input_dim=10, eval_dims=[4]).ks == (4,)
    with pytest.raises(
        ConfigError, match=re.escape("model.eval_dims [4]: csr cannot produce the size(s) [4]")
    ):
        CSRModule(input_dim=10, dims=[2, 8], eval_dims=[4])
    with pytest.raises(
        ConfigError, match=re.escape("csr: k=4 is not a trained sparsity level (model.dims [2, 8])")
    ):
        CSRModule(input_dim=10, dims=[2, 8]).embed(torch.randn(1, 10), 4)
    with pytest.raises(ConfigError, match=re.escape("model.dims must all be <= output_dim=40, got [2, 64]")):
        CSRModule(input_dim=10, hidden_dim=40, dims=[2, 64])


def test_storage_bits_are_k_indices_and_k_values():
    model = CSRModule(input_dim=1152, hidden_dim=4096, dims=[8, 16])
    assert model.storage_bits(16, "float32") == 16 * (12 + 32)
    assert model.storage_bits(16, "int8") == 16 * (12 + 8)
    assert model.storage_bits(16, "binary") == 16 * 12
    assert sparse_bits(3, 4097, "int4") == 3 * (13 + 4)


def test_int_values_keep_zeros_and_step():
    x = np.array([[0.0, 0.5, 1.0, 0.26]], dtype=np.float32)
    assert np.allclose(dequantize_values(x, "int4", 1.0), [[0.0, 0.4666667, 1.0, 0.2666667]])
    assert np.array_equal(dequantize_values(x, "binary", 1.0), [[0.0, 1.0, 1.0, 1.0]])


def test_the_grid_scores_the_sparse_codes_exactly_with_their_true_bits(tiny_store):
    torch.manual_seed(0)
    model = CSRModule(input_dim=10, hidden_dim=64, dims=[4, 8])
    data = EmbeddingDataModule(str(tiny_store), normalization="l2-concat-l2").eval_data("dev")
    evaluator = EvaluationSpec().evaluator(data.qrels, list(data.query_ids), list(data.corpus_ids), 10)
    rows = evaluate_system(model, data.queries, data.corpus, evaluator, [4, 8], ["float32", "binary"], "csr")
    assert [(r["dim"], r["precision"], r["bits"]) for r in rows] == [
        (4, "float32", 4 * 38),
        (4, "binary", 4 * 6),
        (8, "float32", 8 * 38),
        (8, "binary", 8 * 6),
    ]
    assert rows[0]["compression"] == 32 * 10 / (4 * 38) and rows[0]["scoring"] == "sparse-ip"
    with torch.no_grad():
        q = model.embed(torch.from_numpy(data.queries), 8).numpy()
        c = model.embed(torch.from_numpy(data.corpus), 8).numpy()
    dense = evaluator.evaluate("csr", q, c, [64], ["float32"])[0]
    assert rows[2]["ndcg@10"] == dense["ndcg@10"]  # same ranking as the dense evaluator on the full width
