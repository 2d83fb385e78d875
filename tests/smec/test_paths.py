"""smec.paths: output folders checked before work, names kept inside their folder."""

from __future__ import annotations

import os
import re

import pytest

from smec.errors import ConfigError
from smec.paths import check_output_dir, child_path


def test_an_output_folder_that_can_be_created(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checked, not created
    assert check_output_dir(tmp_path, "--out") == tmp_path


def test_an_output_that_cannot_be_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=re.escape(f"--out: {tmp_path / 'f'} exists and is not a folder")):
        check_output_dir(tmp_path / "f", "--out")
    with pytest.raises(
        ConfigError, match=re.escape(f"cannot create {tmp_path / 'f' / 'x'}: {tmp_path / 'f'} is not")
    ):
        check_output_dir(tmp_path / "f" / "x", "--out")


def test_an_unwritable_parent(tmp_path, monkeypatch):
    # Permission bits do not bind root: simulate what access(2) says for a read-only folder.
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    with pytest.raises(
        ConfigError, match=re.escape(f"--out: {tmp_path / 'x'} cannot be created: {tmp_path} is not writable")
    ):
        check_output_dir(tmp_path / "x", "--out")
    with pytest.raises(ConfigError, match=re.escape(f"--out: {tmp_path} is not writable")):
        check_output_dir(tmp_path, "--out")


@pytest.mark.parametrize("name", ["..", ".", "", "  ", "a/b", "../x", "a\\b", "/abs"])
def test_a_name_that_is_not_one_entry(tmp_path, name):
    with pytest.raises(ConfigError, match="is not a plain name"):
        child_path(tmp_path, name, "writer.name")


def test_a_name_that_is_a_link_out(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "m").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(f"writer.name: {tmp_path / 'out' / 'm'} leads outside")):
        child_path(tmp_path / "out", "m", "writer.name")
    assert child_path(tmp_path / "out", "mrl", "writer.name") == tmp_path / "out" / "mrl"
