"""Report maths on hand-made rows: seed aggregation, Pareto fronts, the budget table and the answers."""

from __future__ import annotations

import numpy as np
import pytest

from smec.evaluation.stats import seed_bootstrap_interval
from smec.experiment.budget_end import budget_end_lines, still_improving
from smec.experiment.plots import pareto_front, plot_pareto
from smec.experiment.report import (
    aggregate,
    answers,
    budget_slots,
    budget_table,
    prefix_caveat,
    reference_row,
    seed_interval,
)

QIDS = ["q0", "q1", "q2", "q3"]


def row(method, dim, precision, value, per_query=None, seed=None, bits=None, input_dim=64):
    bits = bits or dim * {"float32": 32, "int8": 8, "int4": 4, "binary": 1}[precision]
    per_query = np.full(4, value) if per_query is None else np.asarray(per_query, dtype=float)
    return {
        "method": method,
        "dim": dim,
        "precision": precision,
        "bits": bits,
        "compression": 32 * input_dim / bits,
        "ndcg@10": float(np.mean(per_query)),
        "ndcg@10_se": 0.01,
        "per_query": {"ndcg@10": per_query},
        "query_ids": QIDS,
        **({"seed": seed} if seed is not None else {}),
    }


def test_aggregate_means_seeds_and_keeps_se_for_one_seed():
    rows = [
        row("mrl", 8, "float32", 0, per_query=[0.1, 0.2, 0.3, 0.4], seed=0),
        row("mrl", 8, "float32", 0, per_query=[0.3, 0.4, 0.5, 0.6], seed=1),
        row("pca", 8, "float32", 0.2),
    ]
    agg = {r["method"]: r for r in aggregate(rows)}
    assert agg["mrl"]["ndcg@10"] == pytest.approx(0.35)
    assert agg["mrl"]["n_seeds"] == 2
    assert agg["mrl"]["spread"] == pytest.approx(np.std([0.25, 0.45], ddof=1))  # std over seeds
    np.testing.assert_allclose(agg["mrl"]["per_query"]["ndcg@10"], [0.2, 0.3, 0.4, 0.5])
    assert agg["pca"]["spread"] == 0.01 and agg["pca"]["n_seeds"] == 1  # SE over queries


def test_pareto_front_keeps_only_undominated_points():
    points = [(2, 0.9), (4, 0.95), (8, 0.5), (8, 0.6), (16, 0.55)]
    assert pareto_front(points) == [(4, 0.95), (8, 0.6), (16, 0.55)]
    assert pareto_front([]) == []


def test_budget_table_bolds_the_best_method_at_each_budget():
    agg = aggregate(
        [
            row("concat", 64, "float32", 0.5),
            row("pca", 8, "int8", 0.3),
            row("mrl", 8, "int8", 0.35),
            row("mrl", 16, "int4", 0.4),  # same 64 bits: the better configuration represents mrl
            row("opq-pq", 8, "pq", 0.33, bits=64),
        ]
    )
    ref = reference_row(agg, None)
    assert (ref["method"], ref["dim"]) == ("concat", 64)
    table = budget_table(agg, ["concat", "pca", "opq-pq", "mrl"], ref)
    line = next(x for x in table.splitlines() if x.startswith("| 32×"))
    assert line == "| 32× | 64 | – | 0.300 (60%) int8@8 | 0.330 (66%) PQ 64 bits | **0.400 (80%)** int4@16 |"


def test_answers_report_paired_differences():
    agg = aggregate(
        [
            row("model:a", 32, "float32", 0, per_query=[0.5, 0.5, 0.5, 0.5]),
            row("concat", 64, "float32", 0, per_query=[0.6, 0.7, 0.6, 0.7]),
            row("smec", 8, "float32", 0, per_query=[0.3, 0.4, 0.3, 0.4], seed=0),
            row("mrl", 8, "float32", 0, per_query=[0.3, 0.3, 0.3, 0.3], seed=0),
            row("smec", 8, "int8", 0.34, seed=0),
            row("pca", 8, "int8", 0.3),
        ]
    )
    text = "\n".join(answers(agg, ["smec", "mrl"], reference_row(agg, None), 64))
    assert "- concat 0.650 vs a 0.500: +0.150 ± 0.029" in text
    assert (
        "- 8 dims: SMEC 0.350 ± 0.010 (1 seed) vs MRL 0.300 ± 0.010 (1 seed): +0.050 ± 0.029; "
        "1 seed: no seed interval" in text
    )
    # beside it: the strongest training-free row at no more bits than SMEC float32@8 (256 bits): PCA int8@8
    assert "  - beside it: strongest training-free at ≤ 256 bits: pca int8@8 0.300 (SMEC − it" in text
    # int8@8 = 64 bits = 32x: not 48x, so nothing qualifies there; the 48x line says so honestly
    assert "- 96×: no configuration in the grid compresses this much" in text


def test_pareto_plot_writes_a_png(tmp_path):
    agg = aggregate(
        [row("concat", 64, "float32", 0.5), row("mrl", 8, "int8", 0.35), row("model:a", 32, "float32", 0.45)]
    )
    path = plot_pareto(
        agg, ["model:a", "concat", "mrl"], ["mrl"], reference_row(agg, None), tmp_path / "p.png"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def code_row(method, dim, code, value, nbytes, budget, extra=0, family="rabitq", input_dim=64):
    r = row(method, dim, "float32", value, bits=8 * nbytes, input_dim=input_dim)
    r.update(precision=code, code=code, family=family, bytes=nbytes, budget_bytes=budget, extra_bytes=extra)
    return r


def test_codes_join_the_budget_table_and_the_trained_vs_free_answer():
    # 64-d float32 input = 256 bytes: 8 bytes = 32x, 4 bytes = 64x, 16 bytes = 16x.
    agg = aggregate(
        [
            row("concat", 64, "float32", 0.5),
            row("pca", 8, "int8", 0.3),
            row("pca", 32, "binary", 0.28),
            row("mrl", 8, "int8", 0, per_query=[0.3, 0.4, 0.3, 0.4]),
            code_row("pca", 40, "rabitq", 0.36, 7, 8),  # 7 true bytes in the 8-byte budget
            code_row("mrl", 32, "itq+rescore50", 0.2, 4, 4, extra=128, family="binary"),
            code_row("pca", 16, "sq8-quantiles", 0.45, 16, 16, family="scalar"),  # 16x: below 24x
        ]
    )
    ref = reference_row(agg, None)
    pca_code = next(r for r in agg if r["precision"] == "rabitq")
    assert (pca_code["bytes"], pca_code["budget_bytes"], pca_code["family"]) == (7, 8, "rabitq")
    table = budget_table(agg, ["concat", "pca", "mrl"], ref)
    line = next(x for x in table.splitlines() if x.startswith("| 32×"))
    assert line == "| 32× | 64 | – | **0.360 (72%)** rabitq@40 (7 B) | 0.350 (70%) int8@8 |"
    line = next(x for x in table.splitlines() if x.startswith("| 64×"))
    assert (
        line
        == "| 64× | 32 | – | **0.280 (56%)** binary@32 | 0.200 (40%) itq+rescore50@32 (+128 B float32 to rescore) |"
    )
    text = "\n".join(answers(agg, ["mrl"], ref, 64))
    assert "**Does any trained method beat the training-free codes at the same bytes?**" in text
    assert "- 8 B (32×): no: mrl int8@8 0.350 vs pca rabitq@40 (7 B) 0.360 (-0.010 ± 0.029)" in text
    assert (
        "- 4 B (64×): no: mrl itq+rescore50@32 (+128 B float32 to rescore) 0.200 vs pca binary@32 0.280"
        in text
    )
    assert "16 B" not in text  # 16x: below the question's 24x


def test_rows_at_bits_of_their_own_sit_in_the_next_training_free_budget_up():
    # CSR-like rows (k-sparse: 44 and 88 bits) have no training-free row at their bits: each joins the next
    # budget up that one holds (64 and 128 bits), names its bytes, and is compared there; 200 bits lands in the
    # concatenation's 2048 (1x: below the table's 8x).
    agg = aggregate(
        [
            row("concat", 64, "float32", 0.5),
            row("pca", 8, "int8", 0.3),
            row("pca", 16, "int8", 0.4),
            row("csr", 4, "float32", 0.35, bits=44),
            row("csr", 8, "float32", 0.38, bits=88),
            row("csr", 16, "float32", 0.45, bits=200),
        ]
    )
    slots = budget_slots(agg, ["csr"])
    assert (slots[("csr", 4, "float32")], slots[("csr", 8, "float32")]) == (64, 128)
    assert slots[("csr", 16, "float32")] == 2048
    table = budget_table(agg, ["concat", "pca", "csr"], reference_row(agg, None), trained=["csr"])
    lines = [x for x in table.splitlines() if x.startswith("| ") and "CF" not in x]
    assert lines == [
        "| 32× | 64 | – | 0.300 (60%) int8@8 | **0.350 (70%)** float32@4 (5 B) |",
        "| 16× | 128 | – | **0.400 (80%)** int8@16 | 0.380 (76%) float32@8 (11 B) |",
    ]
    text = "\n".join(answers(agg, ["csr"], reference_row(agg, None), 64))
    assert "- 8 B (32×): yes: csr float32@4 (5 B) 0.350 vs pca int8@8 0.300 (+0.050 ± 0.000)" in text
    assert "only trained rows" not in text


def test_pareto_plot_marks_each_code_family(tmp_path, monkeypatch):
    from smec.experiment import plots

    agg = aggregate(
        [
            row("concat", 64, "float32", 0.5),
            row("pca", 32, "binary", 0.28),
            code_row("pca", 40, "rabitq", 0.36, 7, 8),
            code_row("mrl", 32, "itq", 0.2, 4, 4, family="binary"),
            row("mrl", 8, "int8", 0.35),
        ]
    )
    assert [plots.row_family(r) for r in agg] == ["float32", "threshold", "rabitq", "binary", "int"]
    markers = []
    plt = plots._pyplot()
    subplots = plt.subplots

    def spy(*args, **kwargs):  # the figure's axes record each scatter's marker
        fig, ax = subplots(*args, **kwargs)
        scatter = ax.scatter
        ax.scatter = lambda *a, **k: markers.append(k.get("marker")) or scatter(*a, **k)
        return fig, ax

    monkeypatch.setattr(plt, "subplots", spy)
    path = plot_pareto(agg, ["concat", "pca", "mrl"], ["mrl"], reference_row(agg, None), tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one scatter per (method, family), with the family's marker
    assert markers == ["o", "v", "P", "<", "s"]


def seeded_rows(method, means, seeds):
    return [row(method, 8, "float32", 0, per_query=np.full(4, m), seed=s) for m, s in zip(means, seeds)]


def test_seed_interval_is_deterministic_and_brackets_the_mean_difference():
    smec = [0.40, 0.42, 0.47, 0.41, 0.45]
    mrl = [0.38, 0.40, 0.41, 0.42, 0.39]
    agg = {
        r["method"]: r
        for r in aggregate(seeded_rows("smec", smec, range(5)) + seeded_rows("mrl", mrl, range(5)))
    }
    text = seed_interval(agg["smec"], agg["mrl"])
    assert text == seed_interval(agg["smec"], agg["mrl"])  # seeded: the same rows, the same interval
    low, high = seed_bootstrap_interval(smec, mrl, paired=True)
    assert low < np.mean(smec) - np.mean(mrl) < high
    assert text == f"seeds 95% [{low:+.3f}, {high:+.3f}]"
    # seeds listed in another order are lined up by seed before pairing
    shuffled = aggregate(seeded_rows("mrl", mrl[::-1], range(4, -1, -1)))[0]
    assert seed_interval(agg["smec"], shuffled) == text
    # different seed sets: each side resampled on its own, still around the difference
    other = aggregate(seeded_rows("mrl", mrl, range(10, 15)))[0]
    low, high = seed_bootstrap_interval(smec, mrl, paired=False)
    assert seed_interval(agg["smec"], other) == f"seeds 95% [{low:+.3f}, {high:+.3f}]"
    assert low < np.mean(smec) - np.mean(mrl) < high
    assert seed_bootstrap_interval([0.4], mrl) is None
    text = "\n".join(answers(list(agg.values()), ["smec", "mrl"], None, 64))
    assert (
        "- 8 dims: SMEC 0.430 ± 0.029 (5 seeds) vs MRL 0.400 ± 0.016 (5 seeds): +0.030 ± 0.000; "
        "seeds 95% [+0.008, +0.052]" in text
    )


def test_caveat_exactly_when_the_training_free_best_is_a_prefix_of_the_first_model():
    base = [("a", 32), ("b", 32)]
    # 64-d input = 256 B; concat int8@32 = 32 B = 8x: below 24x. binary@32 = 4 B = 64x, binary@48 = 6 B
    agg = aggregate(
        [
            row("concat", 64, "float32", 0.5),
            row("concat", 32, "binary", 0.3),
            row("pca", 32, "binary", 0.25),
            row("concat", 48, "binary", 0.2),
            row("pca", 48, "binary", 0.28),
            row("mrl", 32, "binary", 0.1),
            row("mrl", 48, "binary", 0.1),
        ]
    )
    caveats = [x for x in answers(agg, ["mrl"], reference_row(agg, None), 64, base) if "caveat" in x]
    expected = (
        "  - caveat: concat binary@32 is a prefix of the first model: truncating the concatenation to 32 of its "
        "64 dims keeps only a (32-d), so this is one base model, not the concatenation"
    )
    # the 48x line and the 4 B (64x) line both name concat binary@32; at 6 B PCA wins: no caveat there
    assert caveats == [expected, expected]
    assert prefix_caveat(next(r for r in agg if r["dim"] == 48 and r["method"] == "concat"), base) is None
    assert prefix_caveat(next(r for r in agg if r["dim"] == 32 and r["method"] == "concat"), base[:1]) is None
    assert not [x for x in answers(agg, ["mrl"], reference_row(agg, None), 64) if "caveat" in x]
    # a wider first model: concat at 48 dims is still within it
    assert prefix_caveat(
        next(r for r in agg if r["dim"] == 48 and r["method"] == "concat"), [("a", 48), ("b", 16)]
    )


def fake_fit(root, epoch, epochs, monitor="val/ndcg@10/mean"):
    import json

    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "best.ckpt").write_bytes(b"")
    csv = root / "csv" / "version_0"
    csv.mkdir(parents=True)
    lines = ["epoch,step,train/loss_epoch,val/ndcg@10/mean"]
    lines += [f"{e},{10 * e},{1.0 / (e + 1)},{0.1 * e}" for e in range(epochs)]
    (csv / "metrics.csv").write_text("\n".join(lines) + "\n")
    result = {
        "format": 1,
        "checkpoint": "checkpoints/best.ckpt",
        "epoch": epoch,
        "monitor": monitor,
        "score": 0.5,
        "model_class": "smec.systems.mrl.MRLDecoderModule",
        "data": {},
        "budget": {"optimizer_steps": 10 * epochs, "epochs": epochs},
    }
    (root / "fit_result.json").write_text(json.dumps(result))
    return root


def test_flag_lists_exactly_the_fits_selected_at_their_last_epoch(tmp_path):
    runs = [
        ("csr", 1, fake_fit(tmp_path / "csr" / "s1", 10, 24)),
        ("csr", 2, fake_fit(tmp_path / "csr" / "s2", 23, 24)),
        ("mrl", 0, fake_fit(tmp_path / "mrl/s0", 4, 5)),
        ("mrl", 1, fake_fit(tmp_path / "mrl/s1", 4, 5, monitor=None)),  # the last checkpoint by construction
        ("csr", 0, tmp_path / "csr" / "s0"),  # no fit result: not judged
    ]
    assert still_improving(runs) == ["csr/s2 (epoch 24 of 24)", "mrl/s0 (epoch 5 of 5)"]
    lines = budget_end_lines(runs)
    assert lines[1] == "- csr/s2 (epoch 24 of 24), mrl/s0 (epoch 5 of 5)"
    assert budget_end_lines(runs[:1])[1] == "- no fit"
    assert budget_end_lines([]) == []


def test_the_concatenation_is_set_against_each_larger_single_model():
    # The concat paper's first claim: concat (64-d float32 = 256 B) vs a 32-d reference model (float32 = 128 B),
    # then the best row made from the concatenation in no more than the reference's 128 B.
    agg = aggregate(
        [
            row("model:small", 16, "float32", 0, per_query=[0.2, 0.2, 0.2, 0.2]),
            row("model:big", 32, "float32", 0, per_query=[0.5, 0.6, 0.5, 0.6]),
            row("model:big", 32, "binary", 0.3),  # 4 B: 64x
            row("concat", 64, "float32", 0, per_query=[0.6, 0.7, 0.6, 0.7]),
            row("pca", 32, "int8", 0, per_query=[0.5, 0.5, 0.5, 0.5]),
            row("pca", 64, "int8", 0.6),  # 64 B: within the reference's 128 B
            row("pca", 64, "binary", 0.4),  # 8 B: 32x
            row("pca", 32, "binary", 0.35),  # 4 B: 64x
        ]
    )
    text = answers(agg, [], reference_row(agg, None), 64, references=["big"])
    assert "- concat 0.650 vs small 0.200: +0.450 ± 0.029" in text
    assert not any("vs big" in x for x in text[: text.index("")])  # not among the small models
    assert "- concat 0.650 vs big 0.550: +0.100 ± 0.000" in text
    assert "  - in ≤ 128 B: pca int8@64 0.600 vs big 0.550: +0.050 ± 0.029" in text
    # Each side's best in no more than every budget >= 24x of the concatenation's rows (8 B = 32x, 4 B = 64x).
    assert "  - in ≤ 8 B: big binary@32 0.300 vs pca binary@64 0.400: -0.100 ± 0.000" in text
    assert "  - in ≤ 4 B: big binary@32 0.300 vs pca binary@32 0.350: -0.050 ± 0.000" in text
