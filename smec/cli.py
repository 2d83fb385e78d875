"""The `smec` command.

Training verbs (fit / validate / test / predict) go to LightningCLI; the others are plain sub-commands. Each
verb imports its own dependencies only when it runs, so `smec --help` and `smec embed --help` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# torch and faiss each bring an OpenMP runtime; busy-waiting threads of one starve the other (a faiss search
# right after torch work measured 1.2 s instead of 0.05 s). Must be set before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
# verb -> (module implementing `add_arguments(parser)` and `run(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "embed": ("smec.commands.embed", "embed a dataset with frozen models into an on-disk store"),
    "eval": ("smec.commands.eval", "evaluate baselines / compressed embeddings: nDCG@10 grid"),
    "compare": ("smec.commands.compare", "embed, baselines, fit every method and seed, test grid, report"),
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb in LIGHTNING_VERBS:
        from smec.lightning_cli import run_lightning_cli

        run_lightning_cli([verb, *rest])
        return 0
    if verb not in COMMANDS:
        print(f"smec: unknown command {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[verb]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"smec {verb}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    from datamodules.errors import InputError

    try:
        return int(module.run(args) or 0)
    except InputError as e:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"smec {verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
