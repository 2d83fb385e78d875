"""A pool of subprocesses (`smec fit` jobs), ``parallel`` at a time, with one progress bar over all of them.

Each job writes its output into its own log. The bar counts a unit of work the caller chooses (a fit's epochs,
read from its logs while it runs), so its ETA moves while long jobs run instead of only when one ends. A job that
exits 0 is handed to ``on_success``; the others are returned. Interrupting the pool (Ctrl-C, SIGTERM turned into
KeyboardInterrupt) terminates every running job and waits for it; on Linux a job also dies with the pool's process
(``PR_SET_PDEATHSIG``), even after ``kill -9``, so no orphan keeps writing its run.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Job", "progress_bar", "run_jobs"]

POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Job:
    """One subprocess of the pool.

    Args:
        label: its name in the bar and in messages.
        command: the argv to run.
        log: the file its stdout and stderr are appended to (after a ``# start`` / ``# resume`` line).
        budget: its share of the bar, in the bar's unit (at least 1).
        done_so_far: the units it has finished, polled while it runs (never moves the bar back).
        resumed: whether it continues earlier work (said in its log).
    """

    label: str
    command: list[str]
    log: Path
    budget: int
    done_so_far: Callable[[], int]
    resumed: bool = False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this job when the pool's process dies, even by kill -9."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "run") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


class _Progress:
    """The bar's position per job: polled units, capped at the job's budget, never moving back."""

    def __init__(self, bar: Any, jobs: Sequence[Job]) -> None:
        self.bar = bar
        self.budget = {job.label: max(1, job.budget) for job in jobs}
        self.shown: dict[str, int] = {}

    def show(self, job: Job, units: int) -> None:
        units = max(min(units, self.budget[job.label]), self.shown.get(job.label, 0))
        self.bar.update(units - self.shown.get(job.label, 0))
        self.shown[job.label] = units

    def finish(self, job: Job) -> None:
        self.show(job, self.budget[job.label])


def _start(job: Job, env: Mapping[str, str]) -> tuple[subprocess.Popen, TextIO]:
    log = job.log.open("a", encoding="utf-8")
    what = "resume" if job.resumed else "start"
    log.write(f"\n# {what} {time.strftime('%F %T')}: {shlex.join(job.command)}\n")
    log.flush()
    proc = subprocess.Popen(
        job.command, stdout=log, stderr=subprocess.STDOUT, env=dict(env), preexec_fn=_die_with_parent
    )
    return proc, log


def run_jobs(
    jobs: Sequence[Job],
    parallel: int,
    env: Mapping[str, str] | None = None,
    *,
    on_success: Callable[[Job], None] = lambda job: None,
    desc: str = "jobs",
    unit: str = "run",
    show_progress: bool = True,
) -> list[Job]:
    """Run every job, ``parallel`` at a time; return the ones that failed (after all of them ended)."""
    env = dict(os.environ if env is None else env)
    bar = progress_bar(sum(max(1, j.budget) for j in jobs), desc, show_progress, unit=unit)
    progress = _Progress(bar, jobs)
    pending, active, failed = list(jobs), [], []
    last_poll = 0.0
    try:
        while pending or active:
            while pending and len(active) < parallel:
                job = pending.pop(0)
                active.append((job, *_start(job, env)))
                bar.set_postfix_str(", ".join(j.label for j, _, _ in active))
            time.sleep(0.2)
            if time.monotonic() - last_poll > POLL_SECONDS:
                last_poll = time.monotonic()
                for job, _, _ in active:
                    progress.show(job, job.done_so_far())
            for item in list(active):
                job, proc, log = item
                if proc.poll() is None:
                    continue
                log.close()
                active.remove(item)
                if proc.returncode == 0:
                    on_success(job)
                else:
                    failed.append(job)
                    bar.write(f"[compare] {job.label} failed (exit {proc.returncode}): see {job.log}")
                progress.finish(job)
    except BaseException:
        for _, proc, _log in active:
            proc.terminate()
        for _, proc, log in active:
            proc.wait()
            log.close()
        raise
    finally:
        bar.close()
    return failed
