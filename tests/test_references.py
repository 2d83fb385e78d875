"""Everything the code and the docs refer to exists: repository files, `docs/*.md#anchor` links, dotted names.

Scanned: every ``*.py``, ``*.md``, ``*.yaml`` / ``*.yml`` file and the Makefile of the repository (not the
virtual environment, git, or the run and store folders). Three kinds of reference:

- a path that starts with a top-level folder of the repository (``smec/nn/ads.py``,
  ``configs/ablations/no-{smrl,ads,sxbm}.yaml``, ``tests/smec/export/``) must name a file or folder that exists;
- a link to a markdown file with an anchor (``docs/methods.md#finding-4``, or ``#finding-4`` inside that file)
  must name a heading of that file, by GitHub's anchor rules;
- a test id (``tests/smec/test_checkpointing.py::test_killed_fit_resumes_bit_identical``, and a bare
  ``::test_name`` after it on the same line, meaning the same file) must name a function of that file;
- a dotted name under ``datamodules`` or ``smec`` in the code and the docs (``datamodules.store.reader.
  EmbeddingStore``) must import (tests are skipped here: they name bad classes on purpose).
"""

from __future__ import annotations

import importlib
import itertools
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIPPED_FOLDERS = {".git", ".venv", "runs", "stores", "__pycache__", ".pytest_cache", ".ruff_cache"}
TOP_FOLDERS = ("datamodules", "smec", "tests", "configs", "experiments", "docs")
# Paths that are examples of a form, not references to a file.
EXAMPLES = {"configs/experiment/x.yaml", "tests/a.py", "tests/b/c.py"}
# A comparison's fit labels (`smec/s0`: method smec, seed 0) look like paths under a top folder; they are not.
FIT_LABEL = re.compile(r"^[\w.-]+/s\d+$")

PATH = re.compile(r"(?<![\w./~-])((?:" + "|".join(TOP_FOLDERS) + r")/(?:[\w./-]|\{[\w.-]+(?:,[\w.-]+)+\})*)")
ANCHOR_LINK = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.md)#([\w-]+)")
LOCAL_ANCHOR = re.compile(r"\]\(#([\w-]+)\)")
DOTTED = re.compile(r"(?<![\w./-])((?:datamodules|smec)(?:\.[A-Za-z_]\w*)+)")
TEST_FILE = re.compile(r"(tests/[\w/]+\.py)(?=::)")
TEST_NAME = re.compile(r"::(\w+)")
FILE_SUFFIXES = {"py", "md", "yaml", "yml", "json", "ckpt", "png", "txt", "toml"}


def scanned_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        parts = path.relative_to(REPO).parts
        if any(p in SKIPPED_FOLDERS or p.endswith(".egg-info") for p in parts):
            continue
        if path.is_file() and (path.suffix in (".py", ".md", ".yaml", ".yml") or path.name == "Makefile"):
            files.append(path)
    return sorted(files)


def text_of(path: Path) -> str:
    # A path inside a regex (`configs/mrl\.yaml`) is still a reference to the file.
    return path.read_text(encoding="utf-8").replace("\\.", ".")


def expand_braces(ref: str) -> list[str]:
    """``a/{b,c}.yaml`` -> ``a/b.yaml``, ``a/c.yaml`` (shell brace expansion, as the docs write it)."""
    pieces = re.split(r"\{([\w.,-]+)\}", ref)
    fixed, choices = pieces[0::2], [p.split(",") for p in pieces[1::2]]
    return [
        "".join(a + b for a, b in itertools.zip_longest(fixed, combo, fillvalue=""))
        for combo in itertools.product(*choices)
    ]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(markdown: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in markdown.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = github_anchor(m.group(1))
            out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return frozenset(out)


def resolves(dotted: str) -> bool:
    """The longest importable module prefix of ``dotted``, then attributes down to its last part."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def where(path: Path, text: str, pos: int) -> str:
    return f"{path.relative_to(REPO)}:{text.count(chr(10), 0, pos) + 1}"


def test_every_cited_repository_path_exists():
    missing = []
    for path in scanned_files():
        text = text_of(path)
        for m in PATH.finditer(text):
            for ref in expand_braces(m.group(1).rstrip(".,-")):
                if ref not in EXAMPLES and not FIT_LABEL.match(ref) and not (REPO / ref).exists():
                    missing.append(f"{where(path, text, m.start())}: {ref}")
    assert missing == []


def cited_tests(line: str) -> list[tuple[str, str]]:
    """(file, function) for every test id on a line; a bare ``::name`` belongs to the last file named before it."""
    files = [(m.start(), m.group(1)) for m in TEST_FILE.finditer(line)]
    out = []
    for m in TEST_NAME.finditer(line):
        before = [f for pos, f in files if pos < m.start()]
        if before:
            out.append((before[-1], m.group(1)))
    return out


def test_every_cited_test_exists():
    missing = []
    for path in scanned_files():
        for number, line in enumerate(text_of(path).splitlines(), 1):
            for file, name in cited_tests(line):
                if file in EXAMPLES:
                    continue
                target = REPO / file
                if not target.is_file() or not re.search(rf"^\s*def {name}\(", target.read_text(), re.M):
                    missing.append(f"{path.relative_to(REPO)}:{number}: {file}::{name}")
    assert missing == []


def test_every_markdown_anchor_exists():
    missing = []
    for path in scanned_files():
        text = text_of(path)
        links = [(m.start(), REPO / m.group(1), m.group(2)) for m in ANCHOR_LINK.finditer(text)]
        if path.suffix == ".md":
            links += [(m.start(), path, m.group(1)) for m in LOCAL_ANCHOR.finditer(text)]
        for pos, target, anchor in links:
            if not target.is_file():
                missing.append(f"{where(path, text, pos)}: {target.relative_to(REPO)} does not exist")
            elif anchor not in anchors(target):
                missing.append(
                    f"{where(path, text, pos)}: no heading #{anchor} in {target.relative_to(REPO)}"
                )
    assert missing == []


def test_every_dotted_name_in_the_code_and_docs_imports():
    missing = []
    for path in scanned_files():
        if path.relative_to(REPO).parts[0] == "tests":
            continue
        text = text_of(path)
        for m in DOTTED.finditer(text):
            name = m.group(1).rstrip(".")
            if name.rsplit(".", 1)[-1] in FILE_SUFFIXES:  # smec.yaml, smec.py: file names, checked above
                continue
            if not resolves(name):
                missing.append(f"{where(path, text, m.start())}: {name}")
    assert missing == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("SMEC: where the paper is silent", "smec-where-the-paper-is-silent"),
        ("S-XBM", "s-xbm"),
        ("Finding 4", "finding-4"),
        ("Quantisation and calibration", "quantisation-and-calibration"),
    ],
)
def test_github_anchor(heading, anchor):
    assert github_anchor(heading) == anchor


def test_the_checks_find_what_is_missing(tmp_path):
    assert cited_tests("`tests/a.py::test_x`, `::test_y`; tests/b/c.py::test_z") == [
        ("tests/a.py", "test_x"),
        ("tests/a.py", "test_y"),
        ("tests/b/c.py", "test_z"),
    ]
    assert expand_braces("configs/ablations/no-{smrl,ads,sxbm}.yaml") == [
        "configs/ablations/no-smrl.yaml",
        "configs/ablations/no-ads.yaml",
        "configs/ablations/no-sxbm.yaml",
    ]
    assert [m.group(1) for m in PATH.finditer("see smec/nn/ads.py, https://x.org/smec/a.py, ~/smec/b")] == [
        "smec/nn/ads.py"
    ]
    assert resolves("datamodules.store.reader.EmbeddingStore")
    assert not resolves("datamodules.store.EmbeddingStore")  # the package itself re-exports nothing
    assert not resolves("smec.no_such_module")
    (tmp_path / "a.md").write_text("# Title\n## Title\n")
    assert anchors(tmp_path / "a.md") == {"title", "title-1"}
