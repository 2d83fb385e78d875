"""`smec mteb` on an exported model: a BEIR folder as an mteb custom task gives `smec eval`'s nDCG@10."""

from __future__ import annotations

import json

import pytest

from tests.cli_harness import assert_fails_cleanly, run_smec
from tests.smec.export.conftest import DIM, FIT_SAMPLE


@pytest.fixture(scope="module")
def smec_eval(world, tmp_path_factory):
    """`smec eval` rows of each predicted store at size DIM, keyed by (method, precision)."""
    from smec.cli import main

    rows = {}
    for method, store in world.predicted.items():
        out = tmp_path_factory.mktemp(f"eval-{method}")
        args = ["eval", "--store", str(store), "--out", str(out), "--dims", str(DIM), "--no-trec"]
        assert (
            main([*args, "--fit-sample", str(FIT_SAMPLE), "--precisions", "float32", "int8", "binary"]) == 0
        )
        for row in json.loads((out / "results.json").read_text())["rows"]:
            if row["dim"] == DIM:
                rows[method, row["precision"]] = row
    return rows


@pytest.mark.parametrize(("method", "precision"), [("mrl", "float32"), ("mrl", "binary"), ("smec", "int8")])
def test_mteb_on_a_beir_folder_equals_smec_eval(
    world, exported, smec_eval, tmp_path, capsys, method, precision
):
    out = tmp_path / "mteb"
    outcome = run_smec(
        capsys, ["mteb", "--model", exported(method, precision), "--tasks", world.beir, "--out", out]
    )
    assert outcome.code == 0, outcome.err
    reference = smec_eval[method, precision]
    mteb_result = json.loads((out / "mteb" / "smec-beir.json").read_text())  # mteb's own TaskResult file
    mteb_ndcg = mteb_result["scores"]["test"][0]["ndcg_at_10"]
    assert (
        mteb_result["task_name"] == "smec-beir"
        and mteb_result["scores"]["test"][0]["main_score"] == mteb_ndcg
    )
    assert abs(mteb_ndcg - reference["ndcg@10"]) <= 1e-4
    [row] = json.loads((out / "smec-beir" / "results.json").read_text())["rows"]
    # mteb's run scored by smec's evaluator: the same ranking, so the same per-query values as `smec eval`.
    assert row["method"] == f"exported:{method}" and row["precision"] == precision and row["dim"] == DIM
    assert row["per_query"]["ndcg@10"] == pytest.approx(reference["per_query"]["ndcg@10"], abs=1e-6)
    for measure in ("ndcg@10", "recall@100", "mrr@10"):
        assert row[measure] == pytest.approx(reference[measure], abs=1e-6)
    assert row["mteb_ndcg@10"] == mteb_ndcg and row["bits"] == reference["bits"]
    assert (out / "mteb" / "model_meta.json").is_file() and (out / "smec-beir" / "results.md").is_file()
    assert f"smec-beir: nDCG@10 {reference['ndcg@10']:.4f}" in outcome.out


def test_bad_tasks_and_models_fail_before_anything_is_written(world, exported, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model = exported("mrl", "float32")
    base = ["mteb", "--model", model, "--out", tmp_path / "out"]
    assert_fails_cleanly(
        capsys,
        [*base, "--tasks", "NotATaskAnywhere"],
        expect="not a built-in dataset .* or an MTEB task name",
        watch=tmp_path,
    )
    # A real MTEB task needs the hub: offline it is one clear line, not a traceback from the datasets library.
    assert_fails_cleanly(
        capsys, [*base, "--tasks", "SciFact"], expect="--tasks SciFact: cannot load", watch=tmp_path
    )
    assert_fails_cleanly(
        capsys, [*base, "--tasks", "./no-such-folder"], expect="no such BEIR folder", watch=tmp_path
    )
    assert_fails_cleanly(
        capsys,
        [*base, "--tasks", world.beir, "--split", "val"],
        expect="missing for requested split 'val'",
        watch=tmp_path,
    )
    assert_fails_cleanly(
        capsys,
        ["mteb", "--model", world.tiny_st, "--tasks", world.beir, "--out", tmp_path / "out"],
        expect="not an exported smec model",
        watch=tmp_path,
    )


def test_a_named_mteb_task_runs_through_mteb_and_keeps_its_scores(exported, tmp_path, capsys, monkeypatch):
    """The named-task path (hub data in real use) with mteb's in-memory mock retrieval task."""
    import mteb
    from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask

    monkeypatch.setattr(mteb, "get_task", lambda name: MockRetrievalTask())
    out = tmp_path / "mteb"
    outcome = run_smec(
        capsys, ["mteb", "--model", exported("mrl", "int8"), "--tasks", "MockRetrievalTask", "--out", out]
    )
    assert outcome.code == 0, outcome.err
    result = json.loads((out / "mteb" / "MockRetrievalTask.json").read_text())
    [row] = json.loads((out / "MockRetrievalTask" / "results.json").read_text())["rows"]
    first = result["scores"][row["split"]][0]
    assert row["main_score"] == pytest.approx(first["main_score"]) and row["main_score_name"] == "ndcg_at_10"
    assert row["ndcg@10"] == first["ndcg_at_10"] and row["precision"] == "int8" and "per_query" not in row
