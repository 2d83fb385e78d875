"""The README's result blocks equal the committed reports under docs/results/ (experiments/readme_results.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.readme_results import REPO, blocks, relink, render, section, stale_blocks

REPORT = """# x

## Answers

- a: 1

## Best of each method per budget

| CF | bits |
|---|---|

### detail

more

## Full grid
"""


def test_the_readme_blocks_equal_the_committed_reports():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = [(m.group("file"), m.group("anchor")) for m in blocks(readme)]
    assert ("docs/results/demo/report.md", "best-of-each-method-per-budget") in found
    assert stale_blocks(readme) == []


def test_a_section_runs_to_the_next_heading_of_its_level(tmp_path):
    assert section(REPORT, "answers") == "- a: 1\n"
    assert (
        section(REPORT, "best-of-each-method-per-budget")
        == "| CF | bits |\n|---|---|\n\n### detail\n\nmore\n"
    )
    with pytest.raises(KeyError, match="report: no heading #nope"):
        section(REPORT, "nope")
    (tmp_path / "r.md").write_text(REPORT)
    link = "r.md" + "#answers"  # (written apart: tests/test_references.py would look for r.md)
    readme = f"top\n<!-- results: {link} -->\nold\n<!-- /results -->\nend\n"
    assert stale_blocks(readme, tmp_path) == [link]
    assert render(readme, tmp_path) == f"top\n<!-- results: {link} -->\n- a: 1\n<!-- /results -->\nend\n"
    assert stale_blocks(render(readme, tmp_path), tmp_path) == []
    assert relink("![P](pareto.png) [a](https://x.org/a) [b](#b)", Path("docs/results/demo")) == (
        "![P](docs/results/demo/pareto.png) [a](https://x.org/a) [b](#b)"
    )
