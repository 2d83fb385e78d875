"""Keep the README's result blocks equal to the committed results under docs/results/.

A block in README.md is delimited by two comments and names the report section it copies::

    <!-- results: docs/results/demo/report.md#best-of-each-method-per-budget -->
    ...copied text...
    <!-- /results -->

The section is the text under that heading of the report (GitHub anchor rules), up to the next heading of the
same or a higher level; its relative links (the report's figures) are rewritten to point from the README. ``python experiments/readme_results.py`` rewrites every block from its report;
``--check`` exits 1 naming each block that differs (tests/experiments/test_readme_results.py runs the check). The reports
themselves are what `smec compare` wrote (copied from runs/<experiment>/ with their results.json). Not checked
here: that a report still equals what the current code would write from its results.json (the report's
"selected at the last epoch" lines and figures need the run folders, which are not committed).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(
    r"(<!-- results: (?P<file>[\w./-]+)#(?P<anchor>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S
)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def section(markdown: str, anchor: str, source: str = "report") -> str:
    """The text under the heading whose anchor is ``anchor``, to the next heading of its level or higher."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(#{1,6})\s+(.*)", line)
        if m and github_anchor(m.group(2)) == anchor:
            level = len(m.group(1))
            body = []
            for nxt in lines[i + 1 :]:
                h = re.match(r"(#{1,6})\s+", nxt)
                if h and len(h.group(1)) <= level:
                    break
                body.append(nxt)
            return "\n".join(body).strip("\n") + "\n"
    raise KeyError(f"{source}: no heading #{anchor}")


def relink(text: str, folder: Path) -> str:
    """Relative link and image targets of a report (``](pareto.png)``) made relative to the README instead."""
    if str(folder) in ("", "."):
        return text
    return re.sub(r"\]\((?![a-z]+:|#|/)([^)\s]+)\)", lambda m: f"]({folder.as_posix()}/{m.group(1)})", text)


def blocks(readme: str) -> list[re.Match[str]]:
    return list(BLOCK.finditer(readme))


def render(readme: str, root: Path = REPO) -> str:
    """README text with every block replaced by its report section."""

    def one(m: re.Match[str]) -> str:
        report = root / m.group("file")
        text = section(report.read_text(encoding="utf-8"), m.group("anchor"), m.group("file"))
        return f"{m.group(1)}{relink(text, Path(m.group('file')).parent)}{m.group(5)}"

    return BLOCK.sub(one, readme)


def stale_blocks(readme: str, root: Path = REPO) -> list[str]:
    """``file#anchor`` of every block whose text differs from its report section."""
    fresh = {(m.group("file"), m.group("anchor")): m.group("body") for m in blocks(render(readme, root))}
    return [
        f"{m.group('file')}#{m.group('anchor')}"
        for m in blocks(readme)
        if fresh[(m.group("file"), m.group("anchor"))] != m.group("body")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a block differs; write nothing")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args(argv)
    readme = args.readme.read_text(encoding="utf-8")
    stale = stale_blocks(readme)
    if args.check:
        for name in stale:
            print(f"{args.readme.name}: the block of {name} differs from the report", file=sys.stderr)
        return 1 if stale else 0
    if stale:
        args.readme.write_text(render(readme), encoding="utf-8")
    print(f"{len(blocks(readme))} blocks, {len(stale)} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
