"""`smec eval` on a tiny store: the baseline grid and a compressed store, written as results.json/md/TREC."""

import json
import re

import numpy as np
import pytest

from datamodules.store.writer import StoreWriter, TextSetSpec
from smec.cli import main
from tests.conftest import build_store


def test_baseline_grid_on_a_raw_store(tiny_store, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "eval",
        "--store",
        str(tiny_store),
        "--out",
        str(out),
        "--dims",
        "2",
        "4",
        "--no-pq",
        "--fit-sample",
        "100",
    ]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    methods = {r["method"] for r in doc["rows"]}
    assert methods == {"model:m1", "model:m2", "concat", "pca"}
    assert doc["metadata"]["input_dim"] == 10 and doc["metadata"]["base_models"] == ["m1", "m2"]
    concat_full = [
        r for r in doc["rows"] if r["method"] == "concat" and r["dim"] == 10 and r["precision"] == "int8"
    ]
    assert concat_full[0]["compression"] == pytest.approx(4.0)  # 32 * 10 / (8 * 10)
    assert "| pca | 4 | float32 |" in (out / "results.md").read_text()
    assert (out / "runs" / "pca.4.float32.trec").read_text().count("\n") > 0
    captured = capsys.readouterr()
    assert "rows in" in captured.out
    # One progress line per grid point on stderr, numbered, in the order of the rows.
    lines = [line for line in captured.err.splitlines() if line.startswith("[eval")]
    assert len(lines) == len(doc["rows"])
    first = doc["rows"][0]
    assert lines[0].startswith(
        f"[eval   1] {first['method']} {first['dim']}-d {first['precision']}: ndcg@10 "
    )
    assert main([*args, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert "[eval" not in capsys.readouterr().err


def test_compressed_store_uses_the_source_width_for_compression(tmp_path):
    source = build_store(tmp_path / "src")
    from datamodules.store.reader import EmbeddingStore

    src = EmbeddingStore(source)
    writer = StoreWriter(
        tmp_path / "pred",
        dataset=src.dataset,
        fingerprint=src.meta["dataset"]["fingerprint"],
        text_sets=[TextSetSpec(ts, src.ids(ts)) for ts in src.text_sets],
        qrels={s: src.qrels(s) for s in src.splits},
    )
    rng = np.random.default_rng(0)
    info = {"spec": "toy", "kind": "compressed", "input_dim": 64, "source_models": ["m1", "m2"]}
    for ts in src.text_sets:
        data = rng.standard_normal((len(src.ids(ts)), 8)).astype(np.float32)
        writer.write("toy", ts, dim=8, encode=lambda a, b, d=data: d[a:b], model_info=info, dtype="float32")
    out = tmp_path / "eval"
    assert (
        main(["eval", "--store", str(tmp_path / "pred"), "--out", str(out), "--dims", "4", "--no-trec"]) == 0
    )
    rows = json.loads((out / "results.json").read_text())["rows"]
    binary8 = next(r for r in rows if r["dim"] == 8 and r["precision"] == "binary")
    assert binary8["compression"] == pytest.approx(32 * 64 / 8)
    assert {r["dim"] for r in rows} == {4, 8}


def test_unknown_precision_is_one_clear_error(tiny_store, tmp_path, capsys):
    assert main(["eval", "--store", str(tiny_store), "--out", str(tmp_path), "--precisions", "int3"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"^smec eval: error: .*int3", err) and "Traceback" not in err


def test_codes_join_the_baseline_grid(tmp_path):
    store = build_store(tmp_path / "store", dims={"m1": 24, "m2": 24})
    out = tmp_path / "eval"
    args = ["eval", "--store", str(store), "--out", str(out), "--dims", "8", "16", "--no-pq", "--no-trec"]
    assert main([*args, "--precisions", "int4", "binary", "--codes", "sq4-quantiles"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    # 48-d float32 = 192 bytes; the grid reaches 1, 2 (binary), 4, 8 (int4) bytes at >= 24x; sq4 needs 8 dims
    # (4 bytes) at least: on concat and PCA, 8 dims at 4 bytes and 16 dims at 8 bytes.
    codes = sorted((r["method"], r["dim"], r["bytes"], r["budget_bytes"]) for r in rows if r.get("code"))
    assert codes == [("concat", 8, 4, 4), ("concat", 16, 8, 8), ("pca", 8, 4, 4), ("pca", 16, 8, 8)]
    assert all(r["compression"] == 32 * 48 / r["bits"] for r in rows if r.get("code"))


def test_an_unknown_code_is_one_clear_error(tiny_store, tmp_path, capsys):
    from tests.cli_harness import assert_fails_cleanly

    out = tmp_path / "out"
    assert_fails_cleanly(
        capsys,
        ["eval", "--store", str(tiny_store), "--out", str(out), "--codes", "zip"],
        expect=r"codes: unknown code 'zip': expected one of \['itq', ",
        watch=tmp_path,
    )
