"""first_feedback: the BEIR folder it writes, how it spots a moved bar, and what counts as a warning flood."""

import os
import sys

import pytest

from datamodules.datasets import load_beir
from experiments.bench import first_feedback


def test_the_folder_holds_the_first_documents_and_only_queries_that_point_at_them(tmp_path):
    docs, queries, chars = first_feedback.write_beir(tmp_path, 200)
    ds = load_beir(tmp_path)
    assert docs == len(ds.corpus) == 200 and queries == len(ds.queries["test"]) > 0 and chars > 0
    kept = set(ds.corpus.ids)
    assert all(set(rel) <= kept and rel for rel in ds.qrels["test"].values())


def test_the_watcher_times_the_first_bar_that_moved(tmp_path):
    # An encoder-like bar: 0 first (not movement), another tool's bar (it/s, not texts/s), then a count of 64.
    script = (
        "import sys, time\n"
        "sys.stderr.write('m corpus:   0%|  | 0/300 [00:00<?, ?texts/s]'); sys.stderr.flush()\n"
        "sys.stderr.write('\\rLoading weights: 100%| | 55/55 [00:00<00:00, 9.0it/s]\\n'); sys.stderr.flush()\n"
        "time.sleep(0.5)\n"
        "sys.stderr.write('\\rm corpus:  21%|  | 64/300 [00:01<00:03, 60.1texts/s]'); sys.stderr.flush()\n"
    )
    moved, total, rc, stderr = first_feedback.watch([sys.executable, "-c", script], dict(os.environ))
    assert rc == 0 and moved is not None and 0.5 <= moved <= total
    assert "64/300" in stderr
    never, _, _, _ = first_feedback.watch(
        [sys.executable, "-c", script.split("time.sleep")[0]], dict(os.environ)
    )
    assert never is None


def test_warning_lines_are_counted_across_redraws():
    stderr = (
        "[eval 1] a: ndcg@10 0.5\n"
        "WARNING clustering 3000 points to 256 centroids: please provide at least 9984 training points\r"
        "WARNING clustering 3000 points to 256 centroids: please provide at least 9984 training points\n"
        "smec eval: warning: OPQ trained on 3,000 rows; faiss recommends >= 9,984\n"
    )
    counts = first_feedback.warning_lines(stderr)
    assert sorted(counts.values()) == [1, 2] and len(counts) == 2


def test_a_work_folder_that_is_not_empty_is_refused(tmp_path, capsys):
    (tmp_path / "store").mkdir()
    with pytest.raises(SystemExit):
        first_feedback.main(["--work", str(tmp_path)])
    assert f"--work: {tmp_path} is not empty; the benchmark needs a fresh store" in capsys.readouterr().err
