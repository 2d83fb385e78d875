"""The error boundary of `smec`: input and OS errors of every verb are one line and exit 2."""

from __future__ import annotations

import errno

import pytest

from smec.cli import describe_os_error, error_line, main
from tests.cli_harness import assert_fails_cleanly


def test_os_errors_name_the_file():
    exc = OSError(errno.ENOSPC, "No space left on device", "/data/store/shard-00000.npy")
    assert describe_os_error(exc) == "/data/store/shard-00000.npy: No space left on device"
    assert (
        error_line("embed", exc) == "smec embed: error: /data/store/shard-00000.npy: No space left on device"
    )


def test_multi_line_messages_are_folded_into_one():
    assert error_line("eval", ValueError("first\n  second")) == "smec eval: error: first second"


def test_a_missing_dataset_fails_cleanly(tmp_path, capsys):
    assert_fails_cleanly(
        capsys,
        ["embed", "--dataset", tmp_path / "nowhere", "--out", tmp_path / "s"],
        expect="nowhere",
        watch=tmp_path,
    )


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    from datamodules.errors import InputError

    with pytest.raises(InputError):
        main(["embed", "--debug", "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")])
    monkeypatch.setenv("SMEC_DEBUG", "1")
    with pytest.raises(InputError):
        main(["embed", "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")])
