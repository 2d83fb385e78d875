import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("eval_scale", ROOT / "experiments/bench/eval_scale.py")
eval_scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(eval_scale)

SMALL = ["--docs", "3000", "--ref-docs", "1500", "--queries", "20", "--dims", "16", "--dim", "32"]


def test_each_size_runs_its_grid_repeat_times_and_compares_medians(tmp_path, capsys):
    eval_scale.main([*SMALL, "--precisions", "float32", "int8", "--repeat", "2", "--store", str(tmp_path)])
    out = capsys.readouterr().out
    # before, N, after: two passes each, every point once per pass
    for docs in ("1,500", "3,000"):
        for rep in (1, 2):
            assert f"{docs} docs  pass {rep}    16-d float32" in out
            assert f"{docs} docs  pass {rep}    16-d int8" in out
    assert out.count("pass 1  grid of 2 points") == 3
    assert "  16-d float32  median " in out and "x linear (goal <= 1.2)" in out


def test_a_missed_goal_exits_1(tmp_path, capsys):
    assert (
        eval_scale.main([*SMALL, "--precisions", "float32", "--repeat", "1", "--max-rss-gib", "0.001"]) == 1
    )
    assert capsys.readouterr().out.rstrip().endswith("goal MISSED")


def test_repeat_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        eval_scale.main([*SMALL, "--repeat", "0"])
    assert "--repeat: expected a positive integer, got 0" in capsys.readouterr().err
