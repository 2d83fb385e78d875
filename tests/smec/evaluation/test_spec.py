"""The evaluation spec: one place for every setting and its default, checked once, read by every entry point."""

from __future__ import annotations

import argparse
import inspect
import json

import pytest

from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.spec import DEFAULT_SPEC, EVALUATOR_FIELDS, CodeSpec, EvaluationSpec


def test_the_evaluator_and_smec_eval_take_their_defaults_from_the_spec():
    params = inspect.signature(RetrievalEvaluator).parameters
    assert {name: params[name].default for name in EVALUATOR_FIELDS} == DEFAULT_SPEC.evaluator_settings()
    assert DEFAULT_SPEC.calibration_size == 10_000 and DEFAULT_SPEC.int_scoring == "symmetric"

    from smec.commands.eval import add_arguments, spec_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--store", "s", "--out", "o"])
    assert spec_from_args(args) == DEFAULT_SPEC  # no option given: exactly the spec's defaults
    args = parser.parse_args(
        ["--store", "s", "--out", "o", "--dims", "64", "32", "--fit-sample", "5", "--no-pq"]
    )
    assert spec_from_args(args) == EvaluationSpec(dims=(32, 64), calibration_size=5, pq=False)


def test_settings_are_normalised_and_survive_a_round_trip_through_json():
    spec = EvaluationSpec(
        dims=[96, 48], precisions="int8", codes=[{"name": "rabitq2", "params": {"qb": 8}}], binary_rescore=200
    )
    assert spec.dims == (48, 96) and spec.precisions == ("int8",)
    assert spec.codes == (CodeSpec("rabitq2", {"qb": 8}),)
    assert EvaluationSpec(**json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.codes[0].build().bytes_for_dim(96) > 0  # a code of smec.evaluation.codes, ready for a grid


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dims": [8, 8]}, "dims must be a list of distinct positive integers, got [8, 8]"),
        ({"dims": []}, "dims must be a list of distinct positive integers, got []"),
        ({"precisions": ["fp16"]}, "precisions must be distinct values among float32, int8, int4, binary"),
        ({"k": 0}, "k must be a positive integer, got 0"),
        ({"k": 10, "recall_at": 100}, "recall_at must be between 1 and k=10, got 100"),
        ({"calibration_size": 0}, "calibration_size must be a positive integer or null, got 0"),
        ({"calibration_size": True}, "calibration_size must be a positive integer or null, got True"),
        ({"int_scoring": "both"}, "int_scoring must be one of ['symmetric', 'asymmetric'], got 'both'"),
        ({"binary_threshold": "mean"}, "binary_threshold must be one of ['median', 'sign'], got 'mean'"),
        ({"binary_rescore": 50}, "binary_rescore must be >= k=100 (a shortlist to re-rank), got 50"),
        ({"backend": "gpu"}, "unknown search backend 'gpu': expected one of ['auto', 'faiss', 'torch']"),
        ({"no_relevant": "drop"}, "no_relevant must be one of ['zero', 'skip'], got 'drop'"),
        ({"pq": "yes"}, "pq must be true or false, got 'yes'"),
        ({"pq_max_bits": 4}, "pq_max_bits must be an integer >= 8 or null, got 4"),
        ({"codes": "itq"}, "codes must be a list of {name, params} entries, got 'itq'"),
        ({"codes": [{"name": "zip"}]}, "codes: unknown code 'zip': expected one of ["),
        (
            {"codes": [{"code": "itq"}]},
            "codes: expected entries {name: <code>, params: {...}} (optional: budgets, max_dim, methods, label), "
            "got {'code': 'itq'}",
        ),
        (
            {"codes": [{"name": "itq", "budgets": [0]}]},
            "codes: itq: budgets must be a list of positive byte counts, got [0]",
        ),
        ({"codes": [{"name": "rq", "max_dim": 0}]}, "codes: rq: max_dim must be a positive integer, got 0"),
        (
            {"codes": [{"name": "itq", "methods": "pca"}]},
            "codes: itq: methods must be a list of method names, got 'pca'",
        ),
        (
            {"codes": [{"name": "rabitq"}, {"name": "rabitq", "params": {"qb": 4}}]},
            "codes: two entries make rows labelled ['rabitq']: give them distinct labels",
        ),
    ],
)
def test_each_bad_setting_is_one_error_naming_it(settings, message):
    with pytest.raises(EvaluationError) as info:
        EvaluationSpec(**settings)
    assert str(info.value).startswith(message)


def test_the_evaluator_checks_its_settings_with_the_same_rule():
    with pytest.raises(EvaluationError, match=r"^int_scoring must be one of \['symmetric', 'asymmetric'\]"):
        RetrievalEvaluator({"q": {"d": 1}}, ["q"], ["d"], input_dim=4, int_scoring="both")
    spec = EvaluationSpec(k=20, calibration_size=None, seed=2)
    assert spec.evaluator({"q": {"d": 1}}, ["q"], ["d"], 4).settings == spec.evaluator_settings()


def test_code_entries_say_where_they_run_and_round_trip():
    entries = [
        {"name": "itq", "params": {"rescore": 200}, "budgets": [12, 6, 12], "methods": ["pca", "smec"]},
        {"name": "rabitq", "params": {"qb": 4}, "label": "rabitq-qb4", "max_dim": 256},
        {"name": "rabitq"},
    ]
    spec = EvaluationSpec(codes=entries)
    itq, qb4, plain = spec.codes
    assert (itq.precision, itq.budgets, itq.methods) == ("itq+rescore200", (6, 12), ("pca", "smec"))
    assert itq.runs_on("pca") and not itq.runs_on("mrl") and plain.runs_on("mrl")
    assert (qb4.precision, qb4.max_dim, plain.precision) == ("rabitq-qb4", 256, "rabitq")
    assert spec.to_dict()["codes"][0] == {
        "name": "itq",
        "params": {"rescore": 200},
        "budgets": [6, 12],
        "methods": ["pca", "smec"],
    }
    assert EvaluationSpec(**spec.to_dict()) == spec
