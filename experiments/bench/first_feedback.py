"""Benchmark: what a new user sees on a small corpus of their own: how soon `smec embed` moves, and whether
`smec eval` floods the terminal with warnings.

Goals (issue 17): a fresh `smec embed` of a 3,000-document BEIR folder, from an empty model cache (the one-time
conversion of each offline model is part of the wait), shows a progress bar that has moved (a count above 0)
within ``--budget-s`` (30) seconds of the command's start; `smec eval` on that store prints no warning line twice
and at most ``--max-warnings`` (3) of them. Exit status 1 when a goal is missed.

The folder: the first ``--docs`` documents of the shipped debian-demo dataset (package descriptions, 373
characters on average for the first 3,000) and the test queries whose relevant documents are among them, in BEIR
layout. Both commands run as subprocesses, the way a user runs them (the `smec` installed beside this Python).

    python experiments/bench/first_feedback.py [--docs 3000] [--models minilm-l6 ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# An embedding bar that has moved: "minilm-l6 corpus:   2%|▏   | 64/3000 [00:05<04:10, 11.70texts/s]".
MOVED = re.compile(rb" ([1-9]\d*)/\d+ \[[^\]]*texts/s\]")


def write_beir(out: Path, docs: int) -> tuple[int, int, float]:
    """debian-demo's first ``docs`` documents and the test queries pointing at them, as a BEIR folder at ``out``;
    returns (documents, queries, mean characters per document)."""
    from datamodules.datasets import load_dataset

    ds = load_dataset("debian-demo", splits=["test"])
    ids, texts = ds.corpus.ids[:docs], ds.corpus.texts[:docs]
    kept = set(ids)
    qrels = {q: {d: r for d, r in rel.items() if d in kept} for q, rel in ds.qrels["test"].items()}
    qrels = {q: rel for q, rel in qrels.items() if rel}
    queries = [(q, t) for q, t in zip(ds.queries["test"].ids, ds.queries["test"].texts) if q in qrels]
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in zip(ids, texts))
    with open(out / "queries.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries)
    with open(out / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t{r}\n" for q, rel in qrels.items() for d, r in rel.items())
    return len(ids), len(queries), sum(map(len, texts)) / max(1, len(texts))


def watch(cmd: list[str], env: dict[str, str]) -> tuple[float | None, float, int, str]:
    """Run ``cmd``; (seconds from its start to the first moved bar on stderr or None, seconds in all, exit
    status, stderr)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    seen, moved = bytearray(), None
    while chunk := proc.stderr.read1(4096):
        seen += chunk
        # tqdm redraws with "\r": look at the tail only, a bar's update is short
        if moved is None and MOVED.search(seen[-len(chunk) - 200 :]):
            moved = time.perf_counter() - start
    rc = proc.wait()
    return moved, time.perf_counter() - start, rc, seen.decode(errors="replace")


def warning_lines(stderr: str) -> Counter:
    """Each distinct stderr line (tqdm redraws split on "\\r") that says it is a warning, with its count."""
    lines = (part.strip() for line in stderr.splitlines() for part in line.split("\r"))
    return Counter(line for line in lines if "warning" in line.lower())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--models", nargs="+", default=None, help="passed to smec embed (default: its own)")
    p.add_argument(
        "--budget-s", type=float, default=30.0, help="goal: first moved bar within this many seconds"
    )
    p.add_argument(
        "--max-warnings", type=int, default=3, help="goal: at most this many warning lines from eval"
    )
    p.add_argument(
        "--work", type=Path, default=None, help="keep the folder, store and cache here (default: temp)"
    )
    args = p.parse_args(argv)
    if args.docs < 1:
        p.error(f"--docs: expected a positive number of documents, got {args.docs}")
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        p.error(
            f"--work: {args.work} is not empty; the benchmark needs a fresh store and an empty model cache"
        )
    smec = str(Path(sys.executable).with_name("smec"))
    if args.work is None:
        scratch = tempfile.TemporaryDirectory(prefix="smec-first-feedback-")
    else:
        scratch = contextlib.nullcontext(str(args.work))  # kept: the user asked for the files
    with scratch as tmp:
        work = Path(tmp)
        folder, store, cache = work / "beir", work / "store", work / "model-cache"
        n_docs, n_queries, chars = write_beir(folder, args.docs)
        print(
            f"BEIR folder {folder}: {n_docs:,} documents ({chars:.0f} characters on average), {n_queries} queries"
        )
        env = {**os.environ, "SMEC_CACHE_DIR": str(cache)}  # empty: a new user's first run
        embed = [smec, "embed", "--dataset", str(folder), "--out", str(store)]
        embed += ["--models", *args.models] if args.models else []
        moved, embed_s, rc, _ = watch(embed, env)
        if rc:
            print(f"smec embed failed (exit {rc})")
            return 1
        evaluated = subprocess.run(
            [smec, "eval", "--store", str(store), "--out", str(work / "eval")],
            capture_output=True,
            text=True,
            env=env,
        )
        if evaluated.returncode:
            print(f"smec eval failed (exit {evaluated.returncode}):\n{evaluated.stderr[-2000:]}")
            return 1
    warnings = warning_lines(evaluated.stderr)
    ok_bar = moved is not None and moved <= args.budget_s
    ok_quiet = sum(warnings.values()) <= args.max_warnings and all(c == 1 for c in warnings.values())
    first = "never" if moved is None else f"after {moved:.1f} s"
    print(
        f"smec embed: first moved bar {first} (goal <= {args.budget_s:g} s): {'OK' if ok_bar else 'MISSED'}"
    )
    print(f"  the whole embed took {embed_s:.0f} s")
    lines = len(evaluated.stderr.splitlines())
    print(f"smec eval: {lines} stderr lines, {sum(warnings.values())} warning lines:")
    for line, count in warnings.items():
        print(f"  {count} x {line}")
    print(f"  goal: no warning line twice, at most {args.max_warnings}: {'OK' if ok_quiet else 'MISSED'}")
    return 0 if ok_bar and ok_quiet else 1


if __name__ == "__main__":
    sys.exit(main())
