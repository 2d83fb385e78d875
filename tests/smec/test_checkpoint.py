"""smec.checkpoint: safe loading, the checkpoint a fit selected, and what counts as another configuration."""

from __future__ import annotations

import re

import pytest
import torch

from smec.checkpoint import differences, load_checkpoint, selected_checkpoint
from smec.errors import ConfigError


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / "a.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"dims": [2, 4]}}, path)
    loaded = load_checkpoint(path, "--ckpt_path")
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2)) and loaded["hyper_parameters"]["dims"] == [
        2,
        4,
    ]


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Evil(marker)}, path)
    with pytest.raises(
        ConfigError, match=r"^opt: \S+evil\.ckpt: refused to load: it holds \S*open, which is not"
    ):
        load_checkpoint(path, "opt")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "an empty file"), (b"hello\n", "not a file torch.save wrote")],
)
def test_a_file_that_is_not_a_checkpoint(tmp_path, content, reason):
    path = tmp_path / "x.ckpt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(f"opt: {path} is not a Lightning checkpoint ({reason})")):
        load_checkpoint(path, "opt")


def ckpt(folder, name, best=None):
    state = {"state_dict": {}}
    if best is not None:
        state["callbacks"] = {"ModelCheckpoint{'monitor': 'm'}": {"best_model_path": best}}
    torch.save(state, folder / name)
    return folder / name


def test_the_selected_checkpoint_is_found_by_name_inside_the_folder(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    ckpt(folder, "best-03.ckpt")
    # recorded where the run used to live: the file of that name in this folder is the one
    ckpt(folder, "last.ckpt", best="/elsewhere/old-run/checkpoints/best-03.ckpt")
    assert selected_checkpoint(folder) == folder / "best-03.ckpt"
    # a recorded best that is not in this folder is never followed outside it
    outside = tmp_path / "best-09.ckpt"
    ckpt(tmp_path, "best-09.ckpt")
    ckpt(folder, "last.ckpt", best=str(outside))
    assert selected_checkpoint(folder) == folder / "last.ckpt"


def test_no_checkpoint_at_all(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^grid: no checkpoint found in \S+/checkpoints \(expected \S+last\.ckpt\)$"
    ):
        selected_checkpoint(tmp_path / "checkpoints", "grid")


MODEL = {
    "_class_path": "smec.systems.mrl.MRLDecoderModule",
    "_instantiator": "x",
    "input_dim": 10,
    "dims": [2, 4],
}
DATA = {
    "store": "stores/a",
    "models": None,
    "normalization": "l2-concat-l2",
    "model_weights": None,
    "mode": "unsupervised",
    "include_train_queries": True,
    "train_split": "train",
    "batch_size": 8,
}


def test_what_counts_as_another_configuration(tmp_path):
    saved = {"hyper_parameters": {**MODEL, "eval_dims": [2]}, "datamodule_hyper_parameters": DATA}
    same = differences(
        saved, {**MODEL, "eval_dims": [4], "dims": (2, 4)}, {**DATA, "batch_size": 64}, fit=True
    )
    assert same == []  # eval_dims, the batch size and tuple-vs-list are not the model or its input
    found = differences(saved, {**MODEL, "dims": [2, 8]}, {**DATA, "mode": "both"}, fit=True)
    assert found == [
        "model.init_args.dims: checkpoint [2, 4], config [2, 8]",
        "data.init_args.mode: checkpoint 'unsupervised', config 'both'",
    ]
    # only a resumed fit needs the same training rows; models: null means every model of the store
    assert (
        differences(
            saved,
            MODEL,
            {**DATA, "mode": "both", "models": ["m1", "m2"]},
            fit=False,
            store_models=["m1", "m2"],
        )
        == []
    )
    other = {**MODEL, "_class_path": "smec.systems.smec.SMECModule", "min_dim": 32}
    assert differences(saved, other, DATA, fit=False) == [
        "model.class_path: checkpoint smec.systems.mrl.MRLDecoderModule, config smec.systems.smec.SMECModule"
    ]


def test_grouped_settings_compare_key_by_key():
    """SMEC's smrl / ads / sxbm groups are plain dicts in the checkpoint; one changed setting is one line."""
    groups = {"sxbm": {"enabled": True, "memory_size": 4096, "k": 16}, "smrl": {"enabled": True}}
    smec = {**MODEL, "_class_path": "smec.systems.smec.SMECModule", **groups}
    saved = {"hyper_parameters": smec, "datamodule_hyper_parameters": DATA}
    assert differences(saved, {**smec, "sxbm": dict(groups["sxbm"])}, DATA, fit=True) == []
    changed = {**smec, "sxbm": {**groups["sxbm"], "k": 8}, "smrl": {"enabled": False}}
    assert differences(saved, changed, DATA, fit=True) == [
        "model.init_args.smrl.enabled: checkpoint True, config False",
        "model.init_args.sxbm.k: checkpoint 16, config 8",
    ]
    # a group against a flat value (a checkpoint of an older layout): every key of the group differs
    flat = {**smec, "sxbm": True}
    assert differences({"hyper_parameters": flat}, smec, None, fit=False) == [
        "model.init_args.sxbm: checkpoint True, config None",
        "model.init_args.sxbm.enabled: checkpoint None, config True",
        "model.init_args.sxbm.k: checkpoint None, config 16",
        "model.init_args.sxbm.memory_size: checkpoint None, config 4096",
    ]
