"""Shared checks for how a `smec` command fails: one line, exit 2, nothing half-written, nothing outside.

Used by the bad-input tests of every verb. Commands run in-process through :func:`smec.cli.main` (a subprocess
per case would spend most of the suite importing torch); ``SMEC_DEBUG`` must be unset for the one-line form.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from smec.cli import main


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if "error" in line.lower()]


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` (relative) -> ``"dir"`` or the sha256 of the file's bytes."""
    found: dict[str, str] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = f"link:{path.readlink()}"
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_smec(capsys, argv: Sequence[str]) -> Outcome:
    """``smec <argv>`` in-process; a ``SystemExit`` (argparse, jsonargparse) becomes the exit code."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Outcome(int(code or 0), captured.out, captured.err)


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Paths added, removed or modified between two :func:`tree` snapshots."""
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def assert_fails_cleanly(
    capsys,
    argv: Sequence[str],
    *,
    expect: str,
    watch: Path,
    may_change: Callable[[str], bool] | None = None,
) -> Outcome:
    """Run ``smec <argv>`` and check the failure contract.

    - exit status 2;
    - exactly one stderr line mentions an error: ``smec <verb>: error: ...``, and it contains ``expect`` (a
      regular expression);
    - no traceback on stdout or stderr;
    - nothing under ``watch`` was created, removed or modified, except paths for which ``may_change(rel)`` is
      true (e.g. the complete shards a fault left in its own output folder).
    """
    before = tree(watch)
    outcome = run_smec(capsys, argv)
    verb = str(argv[0])
    assert "Traceback" not in outcome.err + outcome.out, outcome.err
    assert outcome.code == 2, (outcome.code, outcome.err)
    lines = outcome.error_lines
    assert len(lines) == 1, outcome.err
    assert lines[0].startswith(f"smec {verb}: error: "), lines[0]
    assert re.search(expect, lines[0]), (expect, lines[0])
    changed = [p for p in changes(before, tree(watch)) if may_change is None or not may_change(p)]
    assert not changed, f"left behind or modified: {changed}"
    return outcome
