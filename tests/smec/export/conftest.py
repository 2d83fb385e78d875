"""One tiny trained world for the export tests, built once per session (a few seconds on 2 cores).

A BEIR folder -> `smec embed` with the fake encoder plug-in (8-d) and a tiny random BERT saved with prompts
(16-d) -> a tiny MRL (24 -> 16, sizes 8 / 16) and a tiny SMEC (24 -> 16 -> 8), two epochs each -> their
predicted stores at size 8, the rows `smec eval` scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.smec.export.tiny_models import build_beir, build_tiny_st

REPO = Path(__file__).resolve().parents[3]
FAKE = "tests.datamodules.fake_encoder:make"
DIM = 8
FIT_SAMPLE = 100  # of 150 corpus rows: the calibration sample is a real sample


@dataclass
class World:
    root: Path
    beir: Path
    tiny_st: Path
    store: Path
    ckpt: dict[str, Path]
    recipe: dict[str, Path]
    predicted: dict[str, Path]


def recipe(root: Path, name: str, store: Path, model_args: dict, epochs: int) -> Path:
    """configs/<name>.yaml shrunk for the tiny store: no retrieval callback, last checkpoint only."""
    cfg = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    cfg["fit_callbacks"] = {"enabled": False}  # only the checkpoint below
    cfg["model"]["init_args"].update(model_args)
    cfg["data"]["init_args"].update(store=str(store), models=None, batch_size=16)
    cfg["trainer"].update(
        default_root_dir=str(root / f"run-{name}"),
        max_epochs=epochs,
        min_epochs=None,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[
            {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}
        ],
    )
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def predict_at(cfg: Path, ckpt: Path, out: Path, dim: int) -> Path:
    """`smec predict` of a SMEC checkpoint at one size: ``--model.init_args.predict_dim`` on the command line
    is kept over the checkpoint's (it may differ; every other model setting must match)."""
    from smec.lightning_cli import run_lightning_cli

    run_lightning_cli(
        [
            "predict",
            "--config",
            str(cfg),
            "--ckpt_path",
            str(ckpt),
            f"--model.init_args.predict_dim={dim}",
            "--trainer.callbacks+=smec.prediction.StorePredictionWriter",
            f"--trainer.callbacks.output_dir={out}",
        ]
    )
    return out


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    from datamodules.embed import embed_dataset
    from smec.lightning_cli import run_lightning_cli

    root = tmp_path_factory.mktemp("export-world")
    beir = build_beir(root / "beir")
    tiny_st = build_tiny_st(root / "tiny-st")
    store = root / "store"
    embed_dataset(str(beir), [FAKE, str(tiny_st)], store, progress=False)

    recipes = {
        "mrl": recipe(root, "mrl", store, {"output_dim": 16, "dims": [8, 16]}, epochs=2),
        "smec": recipe(
            root,
            "smec",
            store,
            {"dims": [16, 8], "smrl": {"epochs_per_stage": 1}, "sxbm": {"memory_size": 32, "k": 4}},
            epochs=2,
        ),
    }
    ckpt = {}
    for name, cfg in recipes.items():
        run_lightning_cli(["fit", "--config", str(cfg)])
        ckpt[name] = root / f"run-{name}" / "checkpoints" / "last.ckpt"

    predicted = {"mrl": root / "pred-mrl", "smec": root / "pred-smec"}
    run_lightning_cli(
        [
            "predict",
            "--config",
            str(recipes["mrl"]),
            "--ckpt_path",
            str(ckpt["mrl"]),
            "--trainer.callbacks+=smec.prediction.StorePredictionWriter",
            f"--trainer.callbacks.output_dir={predicted['mrl']}",
        ]
    )
    predict_at(recipes["smec"], ckpt["smec"], predicted["smec"], DIM)
    return World(root, beir, tiny_st, store, ckpt, recipes, predicted)


@pytest.fixture(scope="session")
def exported(world, tmp_path_factory):
    """``exported(method, precision)``: the `smec export` folder at size 8, written once per session."""
    from smec.export.writer import export_model

    root = tmp_path_factory.mktemp("exports")
    done: dict[tuple[str, str], Path] = {}

    def get(method: str, precision: str) -> Path:
        if (method, precision) not in done:
            out = root / f"{method}-{precision}"
            export_model(
                world.ckpt[method],
                out,
                dim=DIM,
                precision=precision,
                fit_sample=FIT_SAMPLE,
                dataset=str(world.beir),
            )
            done[method, precision] = out
        return done[method, precision]

    return get
