"""Build the built-in `debian` and `debian-demo` retrieval datasets from Debian's English package descriptions.

The task is short query -> long document in the software domain: the query is a package's synopsis (the first
line of its Description), the one relevant document is the package's extended description, reflowed from
Debian's control-file format into one line of plain text. The package name is the document id.

Input: the English description list of a Debian suite's main area, `dists/<suite>/main/i18n/Translation-en`,
as apt downloads it (`apt-get update -o Acquire::Languages=en`; apt keeps it recompressed as
/var/lib/apt/lists/*_dists_<suite>_main_i18n_Translation-en.lz4, read here through `apt-helper cat-file`), and
the suite's InRelease file, which names the release and lists the list's sha256 (checked here). The file may
also be given decompressed or as .gz / .xz / .bz2.

Output, in BEIR format with gzip-compressed files, under --out (default datamodules/data):
    debian/       every usable package; splits test 2,000 / dev 1,000 / train the rest
    debian-demo/  all test queries, 500 dev, 2,000 train, and a 10,000-document corpus
Each folder also gets README.md (dataset card, with the source snapshot and every filtering count) and
LICENSE (what is known about the descriptions' licences). The build is deterministic: rerunning it on the same
Translation-en writes byte-identical files.

    python experiments/build_debian.py [--translation FILE] [--release FILE] [--out datamodules/data]
"""

import argparse
import bz2
import gzip
import hashlib
import lzma
import re
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import DatasetError

# The split, demo and BEIR-writing helpers are the WordNet builder's, so both datasets are cut the same way.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_wordnet import (
    DEMO_CORPUS,
    DEMO_DEV,
    DEMO_FILL_SEED,
    DEMO_TRAIN,
    DEV_SIZE,
    SPLIT_SEED,
    TEST_SIZE,
    demo_subset,
    make_splits,
    write_beir,
)

APT_LISTS = Path("/var/lib/apt/lists")
APT_HELPER = Path("/usr/lib/apt/apt-helper")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "datamodules" / "data"
TRANSLATION_PATH = "main/i18n/Translation-en"  # the list's path in the InRelease checksum tables

# Documents shorter than this say nothing a retrieval model can use ("Can be safely removed.").
MIN_DOC_CHARS = 40
# No encoder in this project reads past 512 tokens (minilm-l6: 256), about 2,000 characters of this text; the
# few longer descriptions (package lists such as texlive-latex-extra's 80,000 characters) are cut at the last
# space before the limit.
MAX_DOC_CHARS = 2_000
# Synopses of packages that only exist to ease upgrades; their descriptions say so and little else.
_TRANSITIONAL = re.compile(r"\b(?:transitional|dummy)\b", re.IGNORECASE)
# Debian Policy 5.6.1: at least two characters, lower-case letters, digits, '+', '-', '.', starting alphanumeric.
_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
# A list item: a bullet (dropped from the text) or a one- or two-digit number (kept: the order is content).
# Four-digit numbers are years starting a wrapped line ("2005. Another major rewrite ...").
_BULLET = re.compile(r"[*+\-•·o](?:\s+|$)")
_NUMBERED = re.compile(r"\d{1,2}[.)]\s")
_END_PUNCTUATION = tuple(".!?:;,")


@dataclass(frozen=True)
class Package:
    """One package's description, reduced to what the retrieval task uses."""

    name: str
    synopsis: str
    description: str
    full_chars: int = 0  # the reflowed description's length before truncation

    @property
    def doc_id(self) -> str:
        return self.name

    @property
    def query_id(self) -> str:
        return "q" + self.name

    @property
    def doc_text(self) -> str:
        return self.description

    @property
    def query_text(self) -> str:
        return self.synopsis


def _one_line(text: str) -> str:
    return " ".join(text.split())


def reflow(lines: Sequence[str]) -> str:
    """The extended description (the Description field's continuation lines, each starting with a space) as
    one line of plain text.

    Debian's format (Policy 5.6.13): a line with a single space then text is wrapped paragraph text, a line
    " ." separates paragraphs, a line with two or more leading spaces is shown verbatim (lists, code). Here
    every run of whitespace becomes one space and paragraphs are joined with a space. List items (lines
    starting with a bullet such as `*`, `-`, `+`, `o`, `•`, or a number `1.` / `1)`) lose their bullet; an
    item that does not end in punctuation gets ';' before the next item and '.' after the last one, so that
    "Features:\\n  * fast\\n  * small" reads "Features: fast; small.". A line after an item continues it when
    it is indented deeper than the bullet or starts in lower case (a wrapped item).
    """
    units: list[list] = []  # [text, is_item]; None marks a paragraph break
    item_indent: int | None = None
    for raw in lines:
        stripped = raw.strip()
        if stripped in ("", "."):
            units.append(None)
            item_indent = None
            continue
        indent = len(raw) - len(raw.lstrip())
        text = _one_line(stripped)
        bullet = _BULLET.match(text)
        if bullet or _NUMBERED.match(text):
            text = text[bullet.end() :] if bullet else text
            if text:
                units.append([text, True])
                item_indent = indent
            continue
        if item_indent is not None and units[-1] is not None and (indent > item_indent or text[0].islower()):
            units[-1][0] += " " + text
            continue
        item_indent = None
        units.append([text, False])
    out = []
    for i, unit in enumerate(units):
        if unit is None:
            continue
        text, is_item = unit
        if is_item and not text.endswith(_END_PUNCTUATION):
            following = units[i + 1] if i + 1 < len(units) else None
            text += ";" if following is not None and following[1] else "."
        out.append(text)
    return " ".join(out)


def truncate(text: str, limit: int = MAX_DOC_CHARS) -> str:
    """At most `limit` characters, cut at the last space inside the limit (mid-word only for one huge word)."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[: cut if cut > 0 else limit].rstrip()


@dataclass(frozen=True)
class Record:
    """One stanza of a Translation-en file: Package, and Description-en as synopsis + continuation lines."""

    name: str
    synopsis: str
    body: tuple[str, ...]
    line: int


def parse_translation(text: str, where: str = "Translation-en") -> list[Record]:
    """Every stanza of a Translation-en file (RFC 822-style: `Field: value`, continuation lines start with a
    space, stanzas separated by blank lines), in file order. `where` (the file name) goes into errors."""
    records = []
    expected = "expected stanzas of 'Package:', 'Description-md5:' and 'Description-en:' fields"
    stanza: dict[str, list[str]] = {}
    field = None
    start = 0

    def close(end_line: int) -> None:
        if not stanza:
            return
        missing = [f for f in ("Package", "Description-en") if f not in stanza]
        if missing:
            raise DatasetError(f"{where}:{start}: stanza without a {missing[0]} field; {expected}")
        name = stanza["Package"][0].strip()
        if not _PACKAGE_NAME.fullmatch(name):
            raise DatasetError(
                f"{where}:{start}: package name {name!r} is not a Debian package name "
                "(lower-case letters, digits, '+', '-', '.')"
            )
        synopsis, *body = stanza["Description-en"]
        records.append(Record(name, _one_line(synopsis), tuple(body), start))

    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            close(lineno)
            stanza, field = {}, None
            continue
        if line[0] in " \t":
            if field is None:
                raise DatasetError(f"{where}:{lineno}: continuation line outside a field; {expected}")
            stanza[field].append(line)
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name:
            raise DatasetError(f"{where}:{lineno}: not a 'Field: value' line; {expected}")
        if not stanza:
            start = lineno
        if name in stanza:
            raise DatasetError(f"{where}:{lineno}: field {name!r} twice in one stanza")
        field = name
        stanza[field] = [value]
    close(0)
    return records


def read_translation(path: Path) -> bytes:
    """The decompressed bytes of a Translation-en file: plain, .gz, .xz, .bz2, or apt's .lz4 (via apt-helper,
    since Python has no lz4 decoder in the standard library)."""
    try:
        if path.suffix == ".lz4":
            if not APT_HELPER.is_file():
                raise DatasetError(
                    f"{path}: reading .lz4 needs {APT_HELPER} (Debian's apt); decompress it first"
                )
            done = subprocess.run([str(APT_HELPER), "cat-file", str(path)], capture_output=True, check=False)
            if done.returncode != 0:
                reason = _one_line(done.stderr.decode("utf-8", "replace")) or f"exit {done.returncode}"
                raise DatasetError(f"{path}: apt-helper cat-file failed ({reason})")
            return done.stdout
        opener = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(path.suffix, open)
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, lzma.LZMAError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DatasetError(f"{path}: cannot read the Translation-en file ({reason})") from None


@dataclass(frozen=True)
class Snapshot:
    """Where the descriptions came from: the release named by InRelease, and the list's checksum."""

    file_name: str
    size: int
    sha256: str
    release: dict[str, str]  # Origin, Suite, Version, Codename, Date from InRelease ({} without one)
    verified: bool  # the sha256 is the one InRelease lists for main/i18n/Translation-en


def read_release(path: Path, size: int, sha256: str) -> tuple[dict[str, str], bool]:
    """(release fields, checksum verified) from a Release / InRelease file; a listed checksum that differs from
    the file's is an error (the lists are from different `apt-get update`s)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"{path}: cannot read the release file ({getattr(exc, 'strerror', exc)})"
        ) from None
    fields: dict[str, str] = {}
    listed = []
    in_sha256 = False
    for line in text.splitlines():
        if line.startswith(" "):
            parts = line.split()
            if in_sha256 and len(parts) == 3 and parts[2] == TRANSLATION_PATH:
                listed.append((parts[0], int(parts[1])))
            continue
        in_sha256 = line.startswith("SHA256:")
        key, sep, value = line.partition(":")
        if sep and key in ("Origin", "Suite", "Version", "Codename", "Date") and key not in fields:
            fields[key] = value.strip()
    if not fields:
        raise DatasetError(
            f"{path}: no Origin / Suite / Codename fields; expected a Debian Release or InRelease"
        )
    if not listed:
        return fields, False
    if (sha256, size) not in listed:
        raise DatasetError(
            f"{path}: lists {TRANSLATION_PATH} with sha256 {listed[0][0]} ({listed[0][1]:,} bytes), but the "
            f"Translation-en file has {sha256} ({size:,} bytes); run apt-get update again"
        )
    return fields, True


def find_apt_lists(lists_dir: Path = APT_LISTS) -> tuple[Path, Path | None]:
    """(Translation-en, InRelease) of the one main suite in apt's lists (not -updates / -security / -backports)."""
    found = sorted(
        p
        for p in lists_dir.glob("*_dists_*_main_i18n_Translation-en*")
        if "-" not in p.name.split("_dists_")[1].split("_")[0]
    )
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise DatasetError(
            f"{lists_dir}: expected one main-suite Translation-en list, found {listed}; run "
            "`apt-get update -o Acquire::Languages=en` or pass --translation"
        )
    prefix = found[0].name.split("_main_i18n_")[0]
    release = lists_dir / f"{prefix}_InRelease"
    return found[0], release if release.is_file() else None


@dataclass
class Selection:
    """The usable packages and how many records each rule removed (for the dataset card)."""

    packages: list[Package]
    counts: dict[str, int]


def select_packages(records: Iterable[Record]) -> Selection:
    """Apply the task's rules, in this order, and count what each removes:

    1. a package name with several records (per-architecture descriptions such as default-jdk's): dropped,
       since its id would name several texts;
    2. transitional / dummy packages (the synopsis says so): dropped;
    3. an extended description shorter than MIN_DOC_CHARS after reflowing (and cutting to MAX_DOC_CHARS):
       dropped;
    4. the same (synopsis, description) under several names (cross-compiler variants, -dev/-doc twins):
       one pair, under the alphabetically first name;
    5. one-to-one: a pair is kept only if its synopsis (case- and whitespace-insensitive) goes with no other
       description and its description with no other synopsis. A synopsis shared by different descriptions
       ("GNU C preprocessor" x 26) has no single right answer; a description shared by different synopses is
       boilerplate that describes none of them in particular (Haskell's "compiled for profiling" text).
    """
    records = list(records)
    counts = {"records": len(records)}
    per_name = Counter(r.name for r in records)
    single = [r for r in records if per_name[r.name] == 1]
    counts["multi_record_names"] = sum(1 for n in per_name.values() if n > 1)
    counts["multi_record_records"] = len(records) - len(single)

    kept = [r for r in single if not _TRANSITIONAL.search(r.synopsis)]
    counts["transitional"] = len(single) - len(kept)

    packages = []
    for r in kept:
        full = reflow(r.body)
        description = truncate(full)
        if r.synopsis and len(description) >= MIN_DOC_CHARS:
            packages.append(Package(r.name, r.synopsis, description, len(full)))
    counts["short"] = len(kept) - len(packages)

    first_name: dict[tuple[str, str], str] = {}
    for p in sorted(packages, key=lambda p: p.name):
        first_name.setdefault((p.synopsis, p.description), p.name)
    by_name = {p.name: p for p in packages}
    pairs = {name: by_name[name] for name in first_name.values()}
    counts["duplicate_pairs"] = len(packages) - len(pairs)

    by_synopsis: dict[str, set[str]] = defaultdict(set)
    by_description: dict[str, set[str]] = defaultdict(set)
    for p in pairs.values():
        by_synopsis[_synopsis_key(p.synopsis)].add(p.description)
        by_description[p.description].add(p.synopsis)
    shared_synopsis = [p for p in pairs.values() if len(by_synopsis[_synopsis_key(p.synopsis)]) > 1]
    shared_description = [p for p in pairs.values() if len(by_description[p.description]) > 1]
    counts["shared_synopsis"] = len(shared_synopsis)
    counts["shared_description"] = len(shared_description)
    dropped = {p.name for p in shared_synopsis} | {p.name for p in shared_description}
    usable = sorted((p for p in pairs.values() if p.name not in dropped), key=lambda p: p.name)
    counts["ambiguous"] = len(dropped)
    counts["usable"] = len(usable)
    return Selection(usable, counts)


def _synopsis_key(synopsis: str) -> str:
    return _one_line(synopsis).casefold().rstrip(".")


def make_snapshot(translation: Path, data: bytes, release_file: Path | None) -> Snapshot:
    sha256 = hashlib.sha256(data).hexdigest()
    release, verified = read_release(release_file, len(data), sha256) if release_file else ({}, False)
    return Snapshot(translation.name, len(data), sha256, release, verified)


LICENSE_NOTICE = """\
Debian package descriptions: licence notice
===========================================

What this is. The queries (package synopses) and documents (extended descriptions) in this folder are the
English package descriptions of one Debian release's main archive area, taken from the archive's
dists/<suite>/main/i18n/Translation-en list (README.md names the release, the file's date and its sha256),
reflowed to plain text and, above {max_chars:,} characters, shortened. Package names are the ids.

Who wrote them. Each description is the Description field of its binary package, written by the package's
Debian maintainers in the package source (debian/control), often adapted from the upstream project's own
documentation. The Debian archive collects these fields into Translation-en, the English list that apt
reads and that the Debian Description Translation Project (DDTP) translates from. The list itself carries
no copyright notice and no licence statement, and none is given for it in apt's documentation or, as far
as we could find, on Debian's DDTP pages.

Which licence applies. No single one. A description is part of its source package, so it is covered by
that package's copyright and licence, which Debian ships with every package as
/usr/share/doc/<package>/copyright (also on https://sources.debian.org/ and linked from
https://packages.debian.org/<suite>/<package>). Every package in main must satisfy the Debian Free
Software Guidelines (Debian Policy, section 2.2.1), which require permission to redistribute the work and
modified versions of it; so each description may be redistributed, modified, under its own package's
licence. Some of those licences set conditions on redistribution (keeping copyright notices, passing on
the licence text); we have not checked the tens of thousands of copyright files one by one, and this folder
does not reproduce them.

Status: not settled. We know of no statement by Debian that licenses the Translation-en list as a whole.
Whether one- and few-paragraph functional descriptions are protected by copyright at all differs between
jurisdictions. We believe shipping them here for research on retrieval is in line with the packages'
free licences, but this is our reading, not legal advice and not a statement by Debian or by the authors.
If you redistribute these files, keep this notice with them; to get the exact licence of one description,
read its package's copyright file.
"""

_CARD = """\
# {name}: Debian package descriptions, synopsis -> extended description (BEIR format)

{summary}

## Task
Given the one-line synopsis of a Debian package, find the package's extended description.
- **Query** (`queries.jsonl.gz`): the synopsis (first line of the package's Description field). Id: `q` +
  package name.
- **Document** (`corpus.jsonl.gz`): the extended description (the Description field's other lines) as one
  line of plain text. Id: the package name (Debian package names are lower-case letters, digits, `+`, `-`
  and `.`: no whitespace).
- **Relevance** (`qrels/<split>.tsv.gz`): exactly one relevant document per query (score 1): its own
  package's description. No two documents have the same text and no two queries the same synopsis.

Example:
- query `{example_qid}`: {example_query}
- document `{example_did}`: {example_doc}

## Counts
| split | queries |
|---|---|
{split_rows}
| corpus | {n_docs:,} documents |

Lengths in characters (this dataset): documents mean {doc_mean:,.0f}, median {doc_median:,}, max {doc_max:,}
({n_cut:,} documents cut to {max_chars:,}); queries mean {query_mean:,.0f}, max {query_max:,}.

## Source snapshot
{source}
The list changes with every point release (new packages, rewritten descriptions): rebuilding from a later
list gives different files, which is why the snapshot is recorded here.

## How it was built
`python experiments/build_debian.py`, which reads the list and applies, in this order:
{rules}
Descriptions are reflowed from Debian's format (Debian Policy 5.6.13): wrapped lines are joined, ` .`
paragraph separators and verbatim indentation become single spaces, list bullets (`*`, `-`, `+`, `o`, `•`)
are dropped and an item without final punctuation ends in `;` (next item) or `.` (last item); numbered items
keep their numbers. Text is otherwise kept as written: no language filter (Translation-en holds the English
originals; of the 7 descriptions in which French, German, Spanish, Italian, Dutch or Swedish function words
rivalled English ones, none was foreign on inspection, and the rare one that is, such as linuxcnc-doc-es's
Spanish, is kept), and the few synopses wrapped onto the description's first line by mistake (e.g.
linuxcnc-doc-zh-cn's) are taken as they stand.
Splits: the sorted package names are shuffled with `random.Random({split_seed})`; the first {test:,} are
test, the next {dev:,} dev, the rest train. No query appears in two splits.
{demo_note}
Files are gzip-compressed with mtime 0; rebuilding from the same list gives byte-identical files.

## Licence
Each description belongs to its package and is under that package's licence (every package in Debian main
is free software under the Debian Free Software Guidelines); the list as a whole carries no licence of its
own, so the legal status of the collection is not settled. `LICENSE` says what is known and must accompany
any copy of these files.
"""


def _source_text(snapshot: Snapshot) -> str:
    r = snapshot.release
    if r:
        release = " ".join(x for x in (r.get("Origin"), r.get("Version")) if x)
        suite = " / ".join(x for x in (r.get("Codename"), r.get("Suite")) if x)
        line = f"- release: {release} ({suite}), Release file dated {r.get('Date', 'unknown')}"
    else:
        line = "- release: not recorded (built without a Release / InRelease file)"
    check = (
        "matches the sha256 the InRelease lists for `main/i18n/Translation-en`"
        if snapshot.verified
        else "not checked against a Release file"
    )
    return (
        f"{line}\n"
        f"- file: `{TRANSLATION_PATH}` (read from `{snapshot.file_name}`), {snapshot.size:,} bytes "
        f"decompressed\n- sha256 of the decompressed list: `{snapshot.sha256}` ({check})\n"
    )


def _rules_text(c: dict[str, int]) -> str:
    return "\n".join(
        [
            f"1. {c['records']:,} records (one per package name and description); "
            f"{c['multi_record_names']:,} package names with several records (per-architecture "
            f"descriptions, e.g. default-jdk's) are dropped ({c['multi_record_records']:,} records), since "
            "their id would name several texts;",
            f"2. {c['transitional']:,} transitional / dummy packages (synopsis contains `transitional` or "
            "`dummy`) are dropped: their descriptions describe an upgrade path, not software;",
            f"3. {c['short']:,} packages whose reflowed description is empty or shorter than "
            f"{MIN_DOC_CHARS} characters are dropped; longer descriptions are cut at the last space within "
            f"{MAX_DOC_CHARS:,} characters (no encoder here reads more than 512 tokens, about that much text);",
            f"4. {c['duplicate_pairs']:,} packages repeat another package's exact (synopsis, description) "
            "pair (cross-compiler variants, -dev / -doc twins): the pair is kept once, under the "
            "alphabetically first package name;",
            f"5. one query, one document: {c['shared_synopsis']:,} pairs whose synopsis (ignoring case) goes "
            f"with another description and {c['shared_description']:,} pairs whose description goes with "
            f"another synopsis are dropped ({c['ambiguous']:,} in all). A synopsis shared by different "
            'descriptions ("GNU C preprocessor", once per cross-compiler) has no single right answer; a '
            "description shared by different synopses is boilerplate that describes none of them in "
            'particular (Haskell\'s "compiled for profiling" text).',
            f"\n{c['usable']:,} packages remain.",
        ]
    )


def write_card(
    out_dir: Path,
    name: str,
    summary: str,
    packages: dict[str, Package],
    corpus_ids: Sequence[str],
    splits: dict[str, list[str]],
    counts: dict[str, int],
    snapshot: Snapshot,
    full_sizes: tuple[int, int],
    demo_note: str = "",
) -> None:
    example = packages[splits["test"][0]]
    docs = [packages[d] for d in corpus_ids]
    doc_lengths = sorted(len(p.description) for p in docs)
    query_lengths = [len(packages[d].synopsis) for ids in splits.values() for d in ids]
    text = _CARD.format(
        name=name,
        summary=summary,
        example_qid=example.query_id,
        example_query=example.query_text,
        example_did=example.doc_id,
        example_doc=truncate(example.doc_text, 300) + (" ..." if len(example.doc_text) > 300 else ""),
        split_rows="\n".join(f"| {s} | {len(ids):,} |" for s, ids in splits.items()),
        n_docs=len(docs),
        doc_mean=statistics.fmean(doc_lengths),
        doc_median=doc_lengths[len(doc_lengths) // 2],
        doc_max=doc_lengths[-1],
        n_cut=sum(1 for p in docs if p.full_chars > len(p.description)),
        max_chars=MAX_DOC_CHARS,
        query_mean=statistics.fmean(query_lengths),
        query_max=max(query_lengths),
        source=_source_text(snapshot),
        rules=_rules_text(counts),
        split_seed=SPLIT_SEED,
        test=full_sizes[0],
        dev=full_sizes[1],
        demo_note=demo_note,
    )
    (out_dir / "README.md").write_text(text, encoding="utf-8")


def build(
    translation: Path,
    out: Path,
    release_file: Path | None = None,
    test: int = TEST_SIZE,
    dev: int = DEV_SIZE,
    demo_sizes: tuple[int, int, int] = (DEMO_DEV, DEMO_TRAIN, DEMO_CORPUS),
) -> dict[str, dict[str, int]]:
    """Build both datasets under `out`; returns {dataset: {"corpus": n, split: n, ...}}. The sizes are
    parameters so that tests can build from a small list; the shipped files use the defaults."""
    data = read_translation(translation)
    snapshot = make_snapshot(translation, data, release_file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{translation}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    selection = select_packages(parse_translation(text, str(translation)))
    packages = {p.name: p for p in selection.packages}
    demo_dev, demo_train, demo_corpus = demo_sizes
    if len(packages) < max(test + dev + 1, demo_corpus):
        raise DatasetError(
            f"{translation}: only {len(packages):,} usable packages; need more than {test + dev:,} for test + "
            f"dev and at least {demo_corpus:,} for the demo corpus"
        )
    doc_ids = list(packages)
    splits = make_splits(doc_ids, test=test, dev=dev)
    demo_ids, demo_splits = demo_subset(doc_ids, splits, dev=demo_dev, train=demo_train, corpus=demo_corpus)

    datasets = {
        "debian": (
            doc_ids,
            splits,
            "Every usable package of one Debian release's main area: its synopsis is the query, its extended "
            "description the document.",
            "",
        ),
        "debian-demo": (
            demo_ids,
            demo_splits,
            f"A {demo_corpus:,}-document subset of the `debian` dataset, small enough to encode on a laptop.",
            f"\nThe demo keeps all {test:,} test queries, the first {demo_dev:,} dev and the first "
            f"{demo_train:,} train queries (in shuffled order), the documents of all of them, and a random "
            f"fill (`random.Random({DEMO_FILL_SEED})`) from the other documents up to {demo_corpus:,}.\n",
        ),
    }
    counts = {}
    for name, (ids, split_ids, summary, note) in datasets.items():
        folder = out / name
        write_beir(folder, packages, ids, split_ids)
        write_card(
            folder, name, summary, packages, ids, split_ids, selection.counts, snapshot, (test, dev), note
        )
        (folder / "LICENSE").write_text(LICENSE_NOTICE.format(max_chars=MAX_DOC_CHARS), encoding="utf-8")
        counts[name] = {"corpus": len(ids), **{s: len(v) for s, v in split_ids.items()}}
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--translation",
        type=Path,
        default=None,
        help="Translation-en file (plain, .gz, .xz, .bz2 or apt's .lz4); default: the main suite's list in "
        f"{APT_LISTS}",
    )
    parser.add_argument(
        "--release",
        type=Path,
        default=None,
        help="the suite's InRelease / Release file (default: the one beside the apt list, if any)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where debian/ and debian-demo/ go")
    args = parser.parse_args(argv)
    try:
        translation, release = args.translation, args.release
        if translation is None:
            translation, found_release = find_apt_lists()
            release = release or found_release
        counts = build(translation, args.out, release)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, c in counts.items():
        splits = ", ".join(f"{s} {n:,}" for s, n in c.items() if s != "corpus")
        print(f"{args.out / name}: {c['corpus']:,} documents; queries: {splits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
