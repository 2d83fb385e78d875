"""The experiment YAML of `smec compare`: defaults, task list, and one clear error per bad key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smec.experiment.config import ExperimentError, format_cli_value, load_experiment

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, **overrides) -> Path:
    cfg = {
        "name": "t",
        "dataset": "wordnet-demo",
        "models": ["m1", "m2"],
        "dims": [8, 4],
        "trainer": [str(REPO / "configs/trainer/cpu.yaml")],
        "methods": [
            {"name": "mrl", "config": str(REPO / "configs/mrl.yaml"), "args": {"trainer.max_epochs": 2}}
        ],
    }
    cfg.update(overrides)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_defaults_and_task_list(tmp_path):
    cfg = load_experiment(
        write(
            tmp_path,
            seeds=[0, 1],
            methods=[
                {"name": "a", "config": str(REPO / "configs/mrl.yaml")},
                {"name": "b", "config": str(REPO / "configs/smec.yaml"), "seeds": [5]},
            ],
        )
    )
    assert cfg.dims == (4, 8)  # sorted
    assert cfg.store == Path("stores/wordnet-demo")
    assert cfg.split == "test" and cfg.logger == "wandb" and cfg.jobs == 1
    assert cfg.precisions == ("float32", "int8", "int4", "binary")
    assert [(m.name, s) for m, s in cfg.runs()] == [("a", 0), ("a", 1), ("b", 5)]


def test_method_args_become_cli_overrides(tmp_path):
    cfg = load_experiment(
        write(
            tmp_path,
            methods=[
                {
                    "name": "m",
                    "config": str(REPO / "configs/mrl.yaml"),
                    "args": {
                        "model.init_args.dims": [4, 8],
                        "trainer.max_epochs": 3,
                        "model.init_args.init_from": None,
                    },
                }
            ],
        )
    )
    assert cfg.methods[0].cli_args() == [
        "--model.init_args.dims=[4, 8]",
        "--trainer.max_epochs=3",
        "--model.init_args.init_from=null",
    ]
    assert format_cli_value(True) == "true" and format_cli_value("x") == "x"


def test_a_method_may_be_evaluated_at_its_own_sizes(tmp_path):
    """CSR's sizes are sparsity levels k, not widths: its fits and its grid use the method's dims."""
    from smec.experiment.fits import FitRun, fit_command

    csr = {"name": "csr", "config": str(REPO / "configs/csr.yaml"), "dims": [8, 16]}
    mrl = {"name": "mrl", "config": str(REPO / "configs/mrl.yaml")}
    cfg = load_experiment(write(tmp_path, methods=[mrl, csr]))
    assert [cfg.method_dims(m) for m in cfg.methods] == [(4, 8), (8, 16)]
    assert cfg.method_evaluation(cfg.methods[1]).dims == (8, 16) and cfg.evaluation.dims == (4, 8)
    cmd = fit_command(cfg, FitRun(cfg.methods[1], 0, tmp_path / "csr"), "n")
    assert "--model.init_args.eval_dims=[8, 16]" in cmd
    assert any(a.startswith("--evaluation=") and '"dims": [8, 16]' in a for a in cmd)


def test_recipe_paths_resolve_from_the_configs_tree(tmp_path):
    cfg = load_experiment(REPO / "configs/experiment/demo.yaml")
    assert all(p.is_file() for m in cfg.methods for p in m.config)
    # the grid, written once (a YAML anchor), is SMEC's chain below the input: 1152 -> 384 -> 192 -> 96 -> 48
    assert cfg.method("smec").args["model.init_args.dims"] == list(cfg.dims) == [48, 96, 192, 384]
    pca_w = load_experiment(REPO / "configs/experiment/mrl-vs-pca.yaml").method("mrl-pca-w")
    assert [p.name for p in pca_w.config] == ["mrl.yaml", "mrl-pca.yaml"]  # recipes composed in order


def test_the_evaluation_section_is_the_spec_and_the_older_keys_still_load(tmp_path):
    from smec.evaluation.spec import EvaluationSpec

    new = load_experiment(
        write(
            tmp_path,
            dims=None,
            evaluation={"dims": [8, 4], "precisions": ["float32"], "calibration_size": 50, "pq": False},
        )
    )
    assert new.evaluation == EvaluationSpec(
        dims=(4, 8), precisions=("float32",), calibration_size=50, pq=False
    )
    old = load_experiment(
        write(tmp_path, precisions=["float32"], baselines={"fit_sample": 50, "pq": False, "enabled": False})
    )
    assert old.evaluation == new.evaluation and old.baselines is False
    assert load_experiment(write(tmp_path)).evaluation == EvaluationSpec(dims=(4, 8))  # the spec's defaults


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"evaluation": {"dims": [4, 8]}},
            "dims and evaluation.dims are the same setting: keep evaluation.dims",
        ),
        (
            {"baselines": {"fit_sample": 10}, "evaluation": {"calibration_size": 5}},
            "baselines.fit_sample and evaluation.calibration_size are the same setting",
        ),
        ({"dims": None}, "missing required key evaluation.dims (the grid's dims)"),
        ({"evaluation": {"k": 0}}, "evaluation: k must be a positive integer, got 0"),
        ({"evaluation": {"int_scoring": "both"}}, "evaluation: int_scoring must be one of ['symmetric', "),
        (
            {"evaluation": {"codes": [{"name": "zip"}]}},
            "evaluation: codes: unknown code 'zip': expected one of",
        ),
        (
            {"evaluation": {"fit_sample": 3}},
            "unknown key evaluation.fit_sample (expected one of dims, precisions",
        ),
        (
            {"evaluation": {"dims": [4, 12], "precisions": ["binary"]}, "dims": None},
            "dims [4, 12] with precision binary: binary codes need a multiple of 8 dims",
        ),
        (
            {
                "methods": [
                    {
                        "name": "m",
                        "config": str(REPO / "configs/mrl.yaml"),
                        "args": {"model.init_args.eval_dims": [4]},
                    }
                ]
            },
            "methods[0].args: model.init_args.eval_dims is the experiment's evaluation.dims for every method",
        ),
    ],
    ids=["dims-twice", "sample-twice", "no-dims", "k", "scoring", "code", "unknown", "binary", "eval-dims"],
)
def test_bad_evaluation_settings_name_the_key(tmp_path, overrides, message):
    path = write(tmp_path, **overrides)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": None}, "missing required key name"),
        ({"name": "a b"}, "name: expected a name of letters, digits, '_', '.', '-', got 'a b'"),
        ({"dims": [8, 8]}, "dims: expected a list of distinct integers >= 1, got [8, 8]"),
        ({"dims": []}, "dims: expected a list of distinct integers >= 1, got []"),
        (
            {"precisions": ["fp16"]},
            "precisions: expected values among float32, int8, int4, binary, got ['fp16']",
        ),
        ({"logger": "tensorboard"}, "logger: expected csv or wandb, got 'tensorboard'"),
        ({"jobs": 0}, "jobs: expected an integer >= 1, got 0"),
        ({"epochs": 3}, "unknown key epochs (expected one of name, dataset,"),
        ({"baselines": {"pq": "yes"}}, "baselines.pq: expected true or false, got 'yes'"),
        ({"methods": [{"name": "m", "config": "nope.yaml"}]}, "methods[0].config: file not found: nope.yaml"),
        ({"methods": [{"name": "m"}]}, "missing required key methods[0].config"),
        (
            {"methods": [{"name": "m", "config": str(REPO / "configs/mrl.yaml"), "args": {"--lr": 1}}]},
            "methods[0].args: expected dotted CLI keys without leading dashes",
        ),
        (
            {"methods": [{"name": "m", "config": str(REPO / "configs/mrl.yaml")}] * 2},
            "methods: the name 'm' is used twice",
        ),
        ({"reference": ["concat", 8]}, "reference: expected [method, dim, precision], got ['concat', 8]"),
        (
            {"methods": [{"name": "m", "config": str(REPO / "configs/mrl.yaml"), "priority": -1}]},
            "methods[0].priority: expected an integer >= 0, got -1",
        ),
        (
            {"methods": [{"name": "m", "config": str(REPO / "configs/mrl.yaml"), "dims": [0]}]},
            "methods[0].dims: expected a list of distinct integers >= 1, got [0]",
        ),
    ],
)
def test_bad_experiment_files_name_the_key(tmp_path, overrides, message):
    path = write(tmp_path, **overrides)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ExperimentError, match="experiment file not found: "):
        load_experiment(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ExperimentError, match="expected a mapping of experiment keys, got list"):
        load_experiment(bad)
