import json

import numpy as np
import pytest

from smec.evaluation.errors import EvaluationError
from smec.evaluation.results import markdown_table, read_results, run_file_name, write_results, write_trec_run
from smec.evaluation.stats import paired_difference


def _rows():
    ids = ["q1", "q2", "q3"]
    rows = []
    for method, dim, prec, vals in [
        ("concat", 1536, "float32", [0.3, 0.5, 0.1]),
        ("pca", 128, "int8", [0.2, 0.5, 0.2]),
        ("pca", 128, "float32", [0.3, 0.4, 0.2]),
    ]:
        v = np.array(vals)
        rows.append(
            {
                "method": method,
                "dim": dim,
                "precision": prec,
                "bits": dim * {"float32": 32, "int8": 8}[prec],
                "compression": 32 * 1536 / (dim * {"float32": 32, "int8": 8}[prec]),
                "ndcg@10": float(v.mean()),
                "ndcg@10_se": float(v.std(ddof=1) / np.sqrt(3)),
                "per_query": {"ndcg@10": v},
                "query_ids": ids,
            }
        )
    return rows


def test_results_json_round_trip_keeps_paired_comparisons(tmp_path):
    rows = _rows()
    path = write_results(
        tmp_path,
        rows,
        dataset="wordnet",
        split="test",
        base_models=["a", "b"],
        input_dim=1536,
        metadata={"seed": 0},
    )
    assert path.name == "results.json"
    doc = json.loads(path.read_text())
    assert doc["metadata"]["input_dim"] == 1536 and doc["metadata"]["seed"] == 0
    assert doc["query_ids"] == ["q1", "q2", "q3"]
    back, meta = read_results(path)
    assert meta["dataset"] == "wordnet" and meta["base_models"] == ["a", "b"]
    assert back[1]["ndcg@10"] == pytest.approx(rows[1]["ndcg@10"])
    assert paired_difference(back[1], back[0]) == pytest.approx(paired_difference(rows[1], rows[0]))
    slim = write_results(
        tmp_path / "slim.json",
        rows,
        dataset="w",
        split="t",
        base_models=[],
        input_dim=1,
        include_per_query=False,
    )
    assert "per_query" not in json.loads(slim.read_text())["rows"][0]


def test_markdown_table_orders_rows_and_reports_percent_of_reference():
    table = markdown_table(_rows(), reference=("concat", 1536, "float32"))
    lines = table.strip().splitlines()
    assert lines[0] == "| method | dim | precision | bits | CF | ndcg@10 ± SE | % of concat@1536/float32 |"
    assert lines[2].startswith("| concat | 1536 | float32 | 49152 | 1x | 0.300 ± 0.115 | 100.0% |")
    assert lines[3].startswith("| pca | 128 | float32 | 4096 | 12x |")  # float32 before int8
    assert lines[4].endswith("| 48x | 0.300 ± 0.100 | 100.0% |")
    with pytest.raises(EvaluationError, match=r"reference row \('x', 1, 'int8'\) not found"):
        markdown_table(_rows(), reference=("x", 1, "int8"))


def test_trec_run_file_format(tmp_path):
    path = write_trec_run(
        tmp_path / "r.trec",
        ["q1", "q2"],
        ["a", "b", "c"],
        np.array([[0.5, 0.25], [0.125, 0.0]], dtype=np.float32),
        np.array([[2, 0], [1, -1]]),
        tag="m x",
    )
    assert path.read_text().splitlines() == ["q1 Q0 c 1 0.5 m_x", "q1 Q0 a 2 0.25 m_x", "q2 Q0 b 1 0.125 m_x"]
    assert run_file_name("model:minilm-l6", 128, "int8") == "model_minilm-l6.128.int8.trec"


@pytest.mark.parametrize(
    ("query_ids", "corpus_ids", "message"),
    [
        (["q 1", "q2"], ["a", "b", "c"], "cannot write query id 'q 1' into a TREC run"),
        (["q1", "q2"], ["a", "b\tx", "c"], "cannot write document id 'b\\tx' into a TREC run"),
        (["q1", ""], ["a", "b", "c"], "cannot write query id '' into a TREC run"),
    ],
)
def test_trec_ids_that_would_break_the_columns_are_refused(tmp_path, query_ids, corpus_ids, message):
    import re

    with pytest.raises(EvaluationError, match=re.escape(f"{tmp_path / 'r.trec'}: {message}")):
        write_trec_run(
            tmp_path / "r.trec",
            query_ids,
            corpus_ids,
            np.zeros((2, 2), dtype=np.float32),
            np.array([[2, 0], [1, -1]]),
            tag="m",
        )
    assert not (tmp_path / "r.trec").exists()


def test_read_results_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(EvaluationError, match=r"is not a results\.json"):
        read_results(tmp_path / "x.json")


def test_nan_standard_error_is_written_as_null(tmp_path):
    row = {
        "method": "m",
        "dim": 8,
        "precision": "int8",
        "bits": 64,
        "compression": 4.0,
        "ndcg@10": 0.5,
        "ndcg@10_se": float("nan"),
    }
    path = write_results(tmp_path / "r.json", [row], dataset="d", split="s", base_models=[], input_dim=8)
    assert json.loads(path.read_text())["rows"][0]["ndcg@10_se"] is None
    back, _ = read_results(path)
    assert "| m | 8 | int8 | 64 | 4x | 0.500 |" in markdown_table(back)
