"""Every YAML recipe under configs/ parses through the CLI (no training), like litgpt's test_config_hub."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import build_store

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(p for p in CONFIGS.glob("*.yaml"))
FRAGMENTS = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name != "experiment")
GPU_ONLY = {"gpu.yaml", "ddp.yaml", "slurm.yaml"}


def compose(path: Path) -> list[str]:
    """A full recipe alone, or a profile fragment on top of configs/mrl.yaml."""
    return (
        ["--config", str(path)]
        if path in RECIPES
        else ["--config", str(CONFIGS / "mrl.yaml"), "--config", str(path)]
    )


def test_there_are_recipes():
    assert CONFIGS / "mrl.yaml" in RECIPES
    assert {p.parent.name for p in FRAGMENTS} >= {"trainer", "logger", "data"}


@pytest.mark.parametrize("path", RECIPES + FRAGMENTS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_is_valid_yaml_and_parses_through_the_cli(path, tmp_path, capsys):
    from smec.lightning_cli import run_lightning_cli

    assert isinstance(yaml.safe_load(path.read_text()), dict)
    store = build_store(tmp_path / "store")
    args = [
        "fit",
        *compose(path),
        "--data.init_args.store",
        str(store),
        "--data.init_args.models",
        "[m1, m2]",
    ]
    with pytest.raises(SystemExit) as exit_info:
        run_lightning_cli([*args, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("smec.systems.")
    if path.name in GPU_ONLY:
        return  # needs a GPU to instantiate; parsing and type-checking above is what CI can do
    cli = run_lightning_cli([*args[1:], "--trainer.default_root_dir", str(tmp_path / "run")], run=False)
    assert cli.model.input_dim == 10  # linked from data.input_dim (the tiny store's m1 + m2)
    assert cli.datamodule.input_dim == 10
