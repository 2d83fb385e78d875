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


def test_recipe_paths_resolve_from_the_configs_tree(tmp_path):
    cfg = load_experiment(REPO / "configs/experiment/demo.yaml")
    assert all(path.is_file() for m in cfg.methods for path in m.config)
    assert cfg.method("smec").args["model.init_args.dims"] == [384, 192, 96, 48]
    # an ablation is the recipe and its overlay, composed in order (repeated --config)
    configs = REPO / "configs"
    composed = tuple(path.resolve() for path in cfg.method("smec-no-smrl").config)
    assert composed == (configs / "smec.yaml", configs / "ablations/no-smrl.yaml")


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
