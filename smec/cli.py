"""The `smec` command.

Training verbs (fit / validate / test / predict) go to LightningCLI; the others are plain sub-commands. Each
verb imports its own dependencies only when it runs, so `smec --help` and `smec embed --help` stay fast.

Errors: bad input (:class:`datamodules.errors.InputError` and its subclasses) and faults of the file system
(``OSError``: disk full, a read-only folder, a missing file) end the command with one line on stderr,
``smec <verb>: error: <what, naming the file or option>``, and exit status 2, for every verb. ``--debug`` (anywhere
on the command line) or ``SMEC_DEBUG=1`` shows the traceback instead. Anything else is a bug and keeps its
traceback. Warnings of smec's own (e.g. the grid points an automatic grid left out) are one line too,
``smec <verb>: warning: ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Iterator

# torch and faiss each bring an OpenMP runtime; busy-waiting threads of one starve the other (a faiss search
# right after torch work measured 1.2 s instead of 0.05 s). Must be set before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
# verb -> (module implementing `add_arguments(parser)` and `run(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "embed": ("smec.commands.embed", "embed a dataset with frozen models into an on-disk store"),
    "eval": ("smec.commands.eval", "evaluate baselines / compressed embeddings: nDCG@10 grid"),
    "compare": ("smec.commands.compare", "embed, baselines, fit every method and seed, test grid, report"),
    "export": ("smec.commands.export", "write a trained system as a sentence-transformers model folder"),
    "mteb": (
        "smec.commands.mteb",
        "evaluate an exported model with MTEB (tasks, built-in datasets, BEIR folders)",
    ),
}


def _usage() -> str:
    lines = ["usage: smec <command> [options]", "", "commands:"]
    for verb in LIGHTNING_VERBS:
        lines.append(f"  {verb:<9} LightningCLI: {verb} a system from YAML recipes (--config ...)")
    for verb, (_, help_) in COMMANDS.items():
        lines.append(f"  {verb:<9} {help_}")
    lines.append("")
    lines.append("Run `smec <command> --help` for the options of one command.")
    return "\n".join(lines)


def describe_os_error(exc: OSError) -> str:
    """``<file>: <reason>`` for an OS error (``<file> -> <other>`` for a rename), without errno noise."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
    return f"{target}: {reason}"


def error_line(verb: str, exc: BaseException) -> str:
    """The one line a failed command prints: ``smec <verb>: error: ...`` (newlines folded)."""
    message = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
    return f"smec {verb}: error: " + " ".join(message.split())


@contextlib.contextmanager
def one_line_warnings(verb: str) -> Iterator[None]:
    """Show warnings raised by smec's own modules as ``smec <verb>: warning: ...`` (others as Python does)."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if category.__module__.split(".")[0] == "smec":
            print(f"smec {verb}: warning: " + " ".join(str(message).split()), file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SMEC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in LIGHTNING_VERBS and verb not in COMMANDS:
        print(f"smec: unknown command {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from datamodules.errors import InputError

    try:
        with one_line_warnings(verb):
            return _run(verb, rest)
    except (InputError, OSError) as exc:
        if debug:
            raise
        # Bad input, or a file system fault, is the user's to fix: one clear line, no traceback.
        print(error_line(verb, exc), file=sys.stderr)
        return 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad option raised as an InputError (one line, like every other input error)."""

    def error(self, message: str):  # type: ignore[override]
        from datamodules.errors import InputError

        raise InputError(f"{message} (see {self.prog} --help)")


def _run(verb: str, rest: list[str]) -> int:
    if verb in LIGHTNING_VERBS:
        from smec.lightning_cli import run_lightning_cli

        run_lightning_cli([verb, *rest])
        return 0
    module_name, help_ = COMMANDS[verb]
    module = importlib.import_module(module_name)
    parser = _OneLineParser(prog=f"smec {verb}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
