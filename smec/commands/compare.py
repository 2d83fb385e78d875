"""`smec compare --config configs/experiment/<name>.yaml`: the whole comparison, resumable (see smec.experiment)."""

from __future__ import annotations

import argparse

from smec.commands import at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML (configs/experiment/demo.yaml, ...)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<experiment name>)")
    parser.add_argument(
        "--jobs", type=at_least(1), default=None, help="fits in parallel (default: the experiment's jobs)"
    )
    parser.add_argument(
        "--task",
        type=int,
        nargs="+",
        default=None,
        help="only these fit tasks (indices from --list), e.g. one SLURM array task; no report",
    )
    parser.add_argument("--list", action="store_true", help="print the fit tasks with their indices and exit")
    parser.add_argument(
        "--prepare", action="store_true", help="only embed and run the baselines (before --task jobs)"
    )
    parser.add_argument("--fresh", action="store_true", help="delete the run folder first (default: resume)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from datamodules.paths import check_output_dir
    from smec.errors import ConfigError
    from smec.experiment.config import load_experiment
    from smec.experiment.runner import ComparisonError, ComparisonRunner, remove_run

    config = load_experiment(args.config)
    runner = ComparisonRunner(config, args.out, progress=not args.no_progress, jobs=args.jobs)
    if args.list:
        for i, run in enumerate(runner.fit_runs()):
            state = "evaluated" if run.test_results.exists() else "fitted" if run.done.exists() else "todo"
            print(f"{i}\t{run.label}\t{state}")
        return 0
    check_output_dir(runner.out, "--out", ConfigError)  # before the fits, not when the report is written
    if args.fresh:
        remove_run(runner.out)
    if args.prepare:
        runner.prepare_data()
        return 0
    import signal

    def stop(signum: int, frame: object) -> None:
        # `kill` / a scheduler: stop the fits cleanly (the runner terminates them); a rerun continues.
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        paths = runner.run(only=args.task)
    except ComparisonError as exc:
        print(f"smec compare: error: {exc}")
        return 1
    except KeyboardInterrupt:
        print("smec compare: interrupted; run the same command again to continue from what finished")
        return 130
    if args.task is None:
        print(paths["report"].read_text(encoding="utf-8").split("## Full grid")[0])
    print("\n".join(f"{name:>8}: {path}" for name, path in paths.items()))
    return 0
