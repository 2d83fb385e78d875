"""The comparison's export step: each budget's best trained model exported and scored by mteb."""

from __future__ import annotations

import json

import pytest
import yaml

from smec.evaluation.results import read_results
from smec.experiment.config import ExperimentError, load_experiment
from smec.experiment.exported import best_per_budget
from tests.smec.experiment.test_runner import compare, experiment


def test_best_per_budget_picks_the_best_exportable_trained_row():
    def row(method, dim, precision, bits, ndcg):
        return {
            "method": method,
            "dim": dim,
            "precision": precision,
            "bits": bits,
            "compression": 9216 / bits,
            "ndcg@10": ndcg,
        }

    agg = [
        row("mrl", 96, "int8", 768, 0.30),
        row("smec", 192, "int4", 768, 0.31),
        row("pca", 192, "int4", 768, 0.40),  # training-free: not exported
        row("smec", 48, "rabitq-2", 96, 0.50),  # a code smec export does not write
        row("smec", 384, "binary", 384, 0.25),
        row("mrl", 384, "float32", 12288, 0.35),  # below min_cf
    ]
    best = best_per_budget(agg, ["mrl", "smec"], min_cf=8)
    assert [(r["method"], r["bits"]) for r in best] == [("smec", 768), ("smec", 384)]


def test_compare_exports_the_best_model_per_budget_and_mteb_agrees(tmp_path):
    path = experiment(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    # The 8-d fake model (256 bits): int8@2 is 16x, int8@4 8x, float32@2 4x (below min_cf).
    cfg["export"] = {"enabled": True, "min_cf": 8}
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    done = compare(path, out)
    assert done.returncode == 0, done.stderr[-3000:]
    records = sorted(out.glob("exported/*/exported.json"))
    assert [p.parent.name for p in records] == ["mrl-int8-d2-s0", "mrl-int8-d4-s0"]
    rows, _ = read_results(out / "results.json")
    for p in records:
        r = json.loads(p.read_text())
        test = next(
            x for x in rows if x["method"] == "mrl" and x["dim"] == r["dim"] and x["precision"] == "int8"
        )
        assert r["test_grid_ndcg@10"] == pytest.approx(test["ndcg@10"])
        # what leaves the framework scores as the framework measured it
        assert abs(r["mteb_ndcg@10"] - r["test_grid_ndcg@10"]) <= 1e-4
        assert abs(r["rescored_ndcg@10"] - r["test_grid_ndcg@10"]) <= 1e-9
        assert (p.parent / "model" / "modules.json").is_file()
    report = (out / "report.md").read_text()
    assert "## Exported (sentence-transformers folder, scored by mteb)" in report
    assert (
        "- 16 bits (16×): mrl seed 0 int8@2: mteb " in report
        and "- 32 bits (8×): mrl seed 0 int8@4" in report
    )
    assert "- 64 bits" not in report

    rerun = compare(path, out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stderr.count("exported: reusing") == 2


@pytest.mark.parametrize(
    ("export", "message"),
    [
        ({"enabled": "yes"}, "export.enabled: expected true or false, got 'yes'"),
        ({"min_cf": 0}, "export.min_cf: expected a compression factor >= 1, got 0"),
        ({"seed": 3}, "export.seed: 3 is not a seed of any method's fits"),
        ({"top": 1}, "unknown key export.top (expected one of enabled, min_cf, seed, batch_size)"),
    ],
)
def test_a_bad_export_section_is_one_error(tmp_path, export, message):
    path = experiment(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["export"] = export
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(
        ExperimentError,
        match="^"
        + str(path).replace(".", r"\.")
        + ": "
        + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\."),
    ):
        load_experiment(path)
