import subprocess
import sys
import time

from smec.cli import main


def test_help_lists_every_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("fit", "validate", "test", "predict", "embed", "eval"):
        assert f"  {verb}" in out


def test_unknown_verb(capsys):
    assert main(["frobnicate"]) == 2
    assert "smec: unknown command 'frobnicate'" in capsys.readouterr().err


def test_bad_input_is_one_line_without_traceback(tmp_path, capsys):
    assert main(["embed", "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smec embed: error: ") and "Traceback" not in err


def test_start_up_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, time; t = time.perf_counter(); from smec.cli import main; "
        "import smec.commands.embed as e; import argparse; e.add_arguments(argparse.ArgumentParser()); "
        "heavy = [m for m in ('torch', 'lightning', 'faiss', 'transformers', 'sentence_transformers') if m in sys.modules]; "
        "print(heavy, time.perf_counter() - t)"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[] "), out
    assert time.perf_counter() - t0 < 10
