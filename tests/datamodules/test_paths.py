"""datamodules.paths: names kept inside their folder, output folders checked before work."""

from __future__ import annotations

import os
import re

import pytest

from datamodules.errors import InputError
from datamodules.paths import check_output_dir, child_path, safe_child


class ConfigError(InputError):
    """The error class a caller passes (smec passes smec.errors.ConfigError): raised instead of InputError."""


def test_an_output_folder_that_can_be_created(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checked, not created
    assert check_output_dir(tmp_path, "--out") == tmp_path


def test_an_output_that_cannot_be_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=re.escape(f"--out: {tmp_path / 'f'} exists and is not a folder")):
        check_output_dir(tmp_path / "f", "--out", ConfigError)
    with pytest.raises(
        ConfigError, match=re.escape(f"cannot create {tmp_path / 'f' / 'x'}: {tmp_path / 'f'} is not")
    ):
        check_output_dir(tmp_path / "f" / "x", "--out", ConfigError)


def test_an_unwritable_parent(tmp_path, monkeypatch):
    # Permission bits do not bind root: simulate what access(2) says for a read-only folder.
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    with pytest.raises(
        ConfigError, match=re.escape(f"--out: {tmp_path / 'x'} cannot be created: {tmp_path} is not writable")
    ):
        check_output_dir(tmp_path / "x", "--out", ConfigError)
    with pytest.raises(ConfigError, match=re.escape(f"--out: {tmp_path} is not writable")):
        check_output_dir(tmp_path, "--out", ConfigError)


@pytest.mark.parametrize("name", ["..", ".", "", "  ", "a/b", "../x", "a\\b", "/abs"])
def test_a_name_that_is_not_one_entry(tmp_path, name):
    with pytest.raises(ConfigError, match="is not a plain name"):
        child_path(tmp_path, name, "writer.name", ConfigError)


def test_a_name_that_is_a_link_out(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "m").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(f"writer.name: {tmp_path / 'out' / 'm'} leads outside")):
        child_path(tmp_path / "out", "m", "writer.name", ConfigError)
    assert child_path(tmp_path / "out", "mrl", "writer.name") == tmp_path / "out" / "mrl"


def test_the_default_error_is_input_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(
        InputError, match=re.escape(f"--out: {tmp_path / 'f'} exists and is not a folder")
    ) as e:
        check_output_dir(tmp_path / "f", "--out")
    assert type(e.value) is InputError
    with pytest.raises(InputError, match="is not a plain name") as e:
        child_path(tmp_path, "..", "writer.name")
    assert type(e.value) is InputError


def test_safe_child_refuses_names_and_links_that_leave_the_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert safe_child(root, "a", "b.json") == root / "a" / "b.json"
    for parts in [("..",), ("a", "."), ("a/b",), ("a\\b",), ("",), ("x\0",)]:
        with pytest.raises(InputError, match="cannot be a folder or file name"):
            safe_child(root, *parts)
    (root / "out").symlink_to(tmp_path)
    with pytest.raises(InputError, match=re.escape(f"resolves to {tmp_path}/x, outside {root}")):
        safe_child(root, "out", "x")
