"""Every YAML recipe under configs/ parses through the CLI (no training), like litgpt's test_config_hub."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import build_store

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(p for p in CONFIGS.glob("*.yaml"))
FRAGMENTS = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name != "experiment")
GPU_ONLY = {"gpu.yaml", "slurm.yaml"}  # slurm.yaml: needs the SLURM environment
# EarlyStopping patience of the recipes that change the default (fit_callbacks.patience, 8).
PATIENCE = {
    "smec.yaml": 4,
    "no-ads.yaml": 4,  # the ablation overlays compose on smec.yaml
    "no-smrl.yaml": 4,
    "no-sxbm.yaml": 4,
    "search-adaptor.yaml": 10,
    "mrl-matched.yaml": 4,  # SMEC's
    "supervised-smec.yaml": 4,  # the regime overlays compose on their recipe (REGIMES)
    "supervised-search-adaptor.yaml": 10,
}


# The recipe an overlay folder composes on (every other fragment goes on top of configs/mrl.yaml).
BASES = {"ablations": "smec.yaml", "variants": "mrl.yaml"}
# The recipes each regime overlay is meant for (configs/regimes/; compose() parses it on the first).
REGIMES = {
    "unsupervised.yaml": [p.name for p in RECIPES],
    "supervised-smec.yaml": [
        "smec.yaml",
        "smec.yaml+no-smrl.yaml",
        "smec.yaml+no-ads.yaml",
        "smec.yaml+no-sxbm.yaml",
    ],
    "supervised-mrl.yaml": ["mrl.yaml", "mrl-matched.yaml"],
    "supervised-matryoshka-adaptor.yaml": ["matryoshka-adaptor.yaml"],
    "supervised-search-adaptor.yaml": ["search-adaptor.yaml"],
}


def _recipe(name: str) -> list[str]:
    """``smec.yaml+no-smrl.yaml``: a recipe with an ablation overlay on top."""
    first, *overlays = name.split("+")
    return ["--config", str(CONFIGS / first)] + [
        a for o in overlays for a in ("--config", str(CONFIGS / "ablations" / o))
    ]


def compose(path: Path, recipe: str | None = None) -> list[str]:
    """A full recipe alone, or a fragment on top of the recipe it overlays (``recipe``, else ``REGIMES``'s first,
    else ``BASES``, else configs/mrl.yaml)."""
    if path in RECIPES:
        return ["--config", str(path)]
    if recipe is None and path.parent.name == "regimes":
        recipe = REGIMES[path.name][0]
    base = _recipe(recipe) if recipe else ["--config", str(CONFIGS / BASES.get(path.parent.name, "mrl.yaml"))]
    return [*base, "--config", str(path)]


def test_there_are_recipes():
    assert CONFIGS / "mrl.yaml" in RECIPES
    assert {p.parent.name for p in FRAGMENTS} >= {"trainer", "logger", "data", "ablations"}


@pytest.mark.parametrize(
    ("overlay", "key", "value"),
    [
        ("no-smrl", "smrl", {"enabled": False}),
        ("no-ads", "ads", {"enabled": False}),
        ("no-sxbm", "sxbm", {"enabled": False}),
    ],
)
def test_an_ablation_overlay_changes_one_setting_of_the_smec_recipe(overlay, key, value, tmp_path, capsys):
    """configs/smec.yaml + configs/ablations/<overlay>.yaml = the recipe with one group's key changed."""
    store = build_store(
        tmp_path / "store", n_corpus=20, splits={"train": 4, "dev": 4, "test": 4}, dims={"m1": 576, "m2": 576}
    )
    data = ["--data.init_args.store", str(store), "--data.init_args.models", "[m1, m2]"]
    base = print_config(["fit", "--config", str(CONFIGS / "smec.yaml"), *data], capsys)
    path = CONFIGS / "ablations" / f"{overlay}.yaml"
    ablated = print_config(["fit", *compose(path), *data], capsys)
    changed = {
        k
        for k in base["model"]["init_args"]
        if base["model"]["init_args"][k] != ablated["model"]["init_args"][k]
    }
    assert changed == {key}
    assert ablated["model"]["init_args"][key] == {**base["model"]["init_args"][key], **value}
    assert ablated["trainer"]["default_root_dir"] == f"runs/smec-{overlay}"
    assert {k: v for k, v in ablated["trainer"].items() if k != "default_root_dir"} == {
        k: v for k, v in base["trainer"].items() if k != "default_root_dir"
    }


@pytest.mark.parametrize("path", RECIPES + FRAGMENTS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_is_valid_yaml_and_parses_through_the_cli(path, tmp_path, capsys):
    from smec.lightning_cli import run_lightning_cli

    assert isinstance(yaml.safe_load(path.read_text()), dict)
    # As wide as the demo's concatenation (1152): the recipes' sizes (MRL's 512-d decoder, SMEC's chain from
    # 512) must fit inside their input, a narrower store is refused by the systems.
    store = build_store(
        tmp_path / "store", n_corpus=20, splits={"train": 4, "dev": 4, "test": 4}, dims={"m1": 576, "m2": 576}
    )
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
    assert cli.model.input_dim == 1152  # linked from data.input_dim (the store's m1 + m2)
    assert cli.datamodule.input_dim == 1152
    # The standard callbacks (smec/fit_callbacks.py), once each, with the recipe's patience.
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    for name in ("RetrievalEvalCallback", "ModelCheckpoint", "ResumeCheckpoint", "SelectableEarlyStopping"):
        assert names.count(name) == 1, names
    stop = next(c for c in cli.trainer.callbacks if type(c).__name__ == "SelectableEarlyStopping")
    assert stop.patience == PATIENCE.get(path.name, 8)


EXPERIMENTS = sorted((CONFIGS / "experiment").glob("*.yaml"))
SWEEPS = sorted((CONFIGS.parent / "experiments" / "sweeps").glob("*.yaml"))


def print_config(args: list[str], capsys) -> dict:
    from smec.lightning_cli import run_lightning_cli

    with pytest.raises(SystemExit) as exit_info:
        run_lightning_cli([*args, "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


# Parts of a fit's command line that name this run's folders, store and loggers, not its settings.
PER_RUN = (
    "--data.init_args.store=",
    "--data.init_args.models=",
    "--trainer.default_root_dir=",
    "--trainer.logger=",
)
PARSED: dict[tuple, dict] = {}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_loads_and_every_method_parses_through_the_cli(path, tmp_path, capsys):
    """What `smec compare` would run: each method's recipe + trainer profiles + overrides type-check."""
    from smec.experiment.config import load_experiment
    from smec.experiment.runner import ComparisonRunner

    cfg = load_experiment(path)
    runner = ComparisonRunner(cfg, tmp_path / "run", progress=False)
    store = build_store(tmp_path / "store")
    first = {run.method.name: run for run in reversed(runner.fit_runs())}  # one seed per method is enough
    for run in first.values():
        cmd = runner.fit_command(run, "abc123")
        args = cmd[cmd.index("fit") :]
        args = [a for a in args if not a.startswith(PER_RUN)]
        key = (run.seed, *args)  # the experiments share most methods: each command line is parsed once
        if key not in PARSED:
            PARSED[key] = print_config(
                [*args, f"--data.init_args.store={store}", "--data.init_args.models=[m1, m2]"], capsys
            )
        printed = PARSED[key]
        assert printed["seed_everything"] == run.seed
        for key, value in run.method.args.items():
            node = printed
            for part in key.split("."):
                node = node[part]
            assert node == value, key


def test_there_are_experiments_and_sweeps():
    assert {p.name for p in EXPERIMENTS} >= {"demo.yaml", "full.yaml"}
    assert SWEEPS


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_trials_parse_through_the_cli(path, tmp_path, capsys):
    """A trial's command line (``${args}`` = ``--name=value`` per parameter) is a valid `smec fit`."""
    sweep = yaml.safe_load(path.read_text())
    assert sweep["metric"]["name"] == "val/ndcg@10/mean"
    command = sweep["command"]
    assert command[:2] == ["smec", "fit"] and command[-1] == "${args}"
    for pick in (0, -1):  # the low and the high end of every parameter
        trial = []
        for name, spec in sweep["parameters"].items():
            value = spec["values"][pick] if "values" in spec else spec["min" if pick == 0 else "max"]
            trial.append(f"--{name}={value}")
        store = build_store(tmp_path / f"store{pick}")
        args = [*command[1:-1], *trial, f"--data.init_args.store={store}", "--data.init_args.models=[m1, m2]"]
        printed = print_config(
            [a.replace("configs/", f"{CONFIGS}/", 1) if a.startswith("configs/") else a for a in args], capsys
        )
        for name in sweep["parameters"]:
            node = printed
            for part in name.split("."):
                node = node[part]
            assert node is not None, name


def test_every_regime_overlay_is_listed_with_its_recipes():
    assert sorted(REGIMES) == sorted(p.name for p in (CONFIGS / "regimes").glob("*.yaml"))
    assert {p.name for p in RECIPES} >= {r.split("+")[0] for recipes in REGIMES.values() for r in recipes}


REGIME_CASES = [(overlay, recipe) for overlay, recipes in REGIMES.items() for recipe in recipes]


@pytest.mark.parametrize(("overlay", "recipe"), REGIME_CASES, ids=[f"{o}-on-{r}" for o, r in REGIME_CASES])
def test_a_regime_overlay_composes_on_each_recipe_it_is_meant_for(overlay, recipe, tmp_path, capsys):
    """The regime is named, the supervised overlays mine hard negatives and make the rank loss the main term."""
    from smec.lightning_cli import run_lightning_cli

    store = build_store(
        tmp_path / "store", n_corpus=40, splits={"train": 4, "dev": 4, "test": 4}, dims={"m1": 576, "m2": 576}
    )
    data = ["--data.init_args.store", str(store), "--data.init_args.models", "[m1, m2]"]
    args = [*compose(CONFIGS / "regimes" / overlay, recipe), *data]
    base = print_config(["fit", *_recipe(recipe), *data], capsys)
    printed = print_config(["fit", *args], capsys)
    assert base["regime"] == "unsupervised"
    model, data_args = printed["model"]["init_args"], printed["data"]["init_args"]
    assert printed["trainer"]["default_root_dir"] == base["trainer"]["default_root_dir"]
    if overlay == "unsupervised.yaml":
        assert printed["regime"] == "unsupervised" and data_args["negatives"] is None
        assert {k: v for k, v in printed.items() if k != "data"} == {
            k: v for k, v in base.items() if k != "data"
        }
    else:
        assert printed["regime"] == "supervised"
        assert data_args["negatives"]["num_negatives"] == 8 and data_args["mode"] in ("both", "supervised")
        if "rank_weight" in model:  # search-adaptor's rank loss is its only main term, weight 1
            assert model["rank_weight"] == 1.0
            on = [k for k in ("pair_weight", "topk_weight") if base["model"]["init_args"].get(k)]
            unsupervised = [model[k] for k in on]  # the similarity terms the recipe has on: regularisers now
            assert unsupervised and all(0 < w < 1 for w in unsupervised)
    cli = run_lightning_cli([*args, "--trainer.default_root_dir", str(tmp_path / "run")], run=False)
    assert cli.datamodule.negatives is None if overlay == "unsupervised.yaml" else cli.datamodule.negatives
