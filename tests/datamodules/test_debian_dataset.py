"""Tests for the built-in Debian datasets (datamodules/data/debian*) and their builder,
experiments/build_debian.py (reflow, selection rules, deterministic rebuild from a synthetic list)."""

import gzip
import hashlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from datamodules import datasets
from datamodules.datasets import BUILTIN_DATASETS, DATA_DIR, RetrievalDataset, load_beir, load_dataset
from datamodules.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


def load_builder():
    """experiments/build_debian.py is a script, not a package module: import it by path."""
    spec = importlib.util.spec_from_file_location("build_debian", REPO / "experiments" / "build_debian.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the shipped data


def _card_counts(name: str) -> dict[str, int]:
    """The split / corpus counts in a dataset card's Counts table."""
    card = (DATA_DIR / name / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (test|dev|train) \| ([\d,]+) \|$", card, re.M))
    counts = {split: int(n.replace(",", "")) for split, n in rows.items()}
    counts["corpus"] = int(
        re.search(r"^\| corpus \| ([\d,]+) documents \|$", card, re.M).group(1).replace(",", "")
    )
    return counts


def _counts(ds: RetrievalDataset) -> dict[str, int]:
    return {"corpus": len(ds.corpus), **{s: len(q) for s, q in ds.queries.items()}}


def _assert_well_posed(ds: RetrievalDataset) -> None:
    """One relevant document per query (its own package), ids without whitespace, no split overlap, no two
    documents with one text and no two queries with one synopsis."""
    docs = set(ds.corpus.ids)
    assert all(PACKAGE_NAME.fullmatch(d) for d in ds.corpus.ids)
    assert ds.corpus.ids == sorted(ds.corpus.ids)
    seen: set[str] = set()
    for split in ds.splits:
        qids = set(ds.qrels[split])
        assert not qids & seen, f"query ids shared between splits ({split})"
        seen |= qids
        assert set(ds.queries[split].ids) == qids
        for qid, judged in ds.qrels[split].items():
            assert judged == {qid[1:]: 1}
            assert qid[1:] in docs
    assert len(set(ds.corpus.texts)) == len(ds.corpus)
    synopses = [t.casefold() for q in ds.queries.values() for t in q.texts]
    assert len(set(synopses)) == len(synopses)
    lengths = [len(t) for t in ds.corpus.texts]
    assert min(lengths) >= 40 and max(lengths) <= 2_000
    assert not any("\n" in t or "  " in t for t in ds.corpus.texts)


@pytest.fixture(scope="module")
def debian() -> RetrievalDataset:
    return load_dataset("debian")


def test_builtin_debian(debian: RetrievalDataset) -> None:
    assert (debian.name, debian.path) == ("debian", DATA_DIR / "debian")
    counts = _counts(debian)
    assert counts == _card_counts("debian")
    assert (counts["test"], counts["dev"], counts["train"]) == (2_000, 1_000, counts["corpus"] - 3_000)
    assert 55_000 <= counts["corpus"] <= 60_000
    _assert_well_posed(debian)
    text = dict(zip(debian.corpus.ids, debian.corpus.texts))
    assert text["0ad"].startswith('0 A.D. (pronounced "zero ey-dee") is a free, open-source, cross-platform')
    license_text = (DATA_DIR / "debian" / "LICENSE").read_text(encoding="utf-8")
    assert "(Debian Policy, section 2.2.1)" in license_text and "Status: not settled." in license_text


def test_builtin_debian_demo_is_a_closed_subset_of_debian(debian: RetrievalDataset) -> None:
    demo = load_dataset("debian-demo")
    assert (
        _counts(demo)
        == _card_counts("debian-demo")
        == {"corpus": 10_000, "test": 2_000, "dev": 500, "train": 2_000}
    )
    _assert_well_posed(demo)
    assert demo.qrels["test"] == debian.qrels["test"]
    for split in ("dev", "train"):
        assert set(demo.qrels[split]) <= set(debian.qrels[split])
    full_text = dict(zip(debian.corpus.ids, debian.corpus.texts))
    assert all(full_text[d] == t for d, t in zip(demo.corpus.ids, demo.corpus.texts))
    full_query = {q: t for ts in debian.queries.values() for q, t in zip(ts.ids, ts.texts)}
    assert all(full_query[q] == t for ts in demo.queries.values() for q, t in zip(ts.ids, ts.texts))
    assert (DATA_DIR / "debian-demo" / "LICENSE").read_bytes() == (
        DATA_DIR / "debian" / "LICENSE"
    ).read_bytes()


def test_registry_descriptions_and_readme_table_match_the_files(debian: RetrievalDataset) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("debian", "debian-demo"):
        c = _card_counts(name)
        numbers = [f"{c[k]:,}" for k in ("corpus", "test", "dev", "train")]
        cells = r" \| ".join(numbers)
        row = re.search(rf"^\| `{name}` \|[^|]*\| {cells} \|$", readme, re.M)
        assert row, f"README dataset table: no row for {name} with counts {numbers}"
        assert all(n in BUILTIN_DATASETS[name] for n in numbers[1:])


def test_a_missing_builtin_names_its_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path)
    with pytest.raises(
        DatasetError,
        match=r"debian-demo: the built-in dataset 'debian-demo' is not installed; build it with "
        r"`python experiments/build_debian\.py`",
    ):
        load_dataset("debian-demo")
    assert set(datasets._BUILTIN_BUILDERS) == set(BUILTIN_DATASETS)


# ---------------------------------------------------------------- reflow and truncation


@pytest.mark.parametrize(
    ("lines", "text"),
    [
        ([" Wrapped paragraph", " text.", " .", " Second one."], "Wrapped paragraph text. Second one."),
        (
            [" Features:", "  * fast", "  * small and", "    simple", " .", " More."],
            "Features: fast; small and simple. More.",
        ),
        (
            [" Supports:", " - ogg,", " - mp3", " This package is the CLI."],
            "Supports: ogg, mp3. This package is the CLI.",
        ),
        (
            [" Formats:", "  1. Genbank flat file", "  2. EMBL flat file (starts with ID)"],
            "Formats: 1. Genbank flat file; 2. EMBL flat file (starts with ID).",
        ),
        (
            [" * Stream: imperative streams, with update of", "   the latter"],
            "Stream: imperative streams, with update of the latter.",
        ),
        ([" • User Manual", "   o Release Notes!"], "User Manual; Release Notes!"),
        (
            [" * item", " wrapped in lower case", " Then a sentence."],
            "item wrapped in lower case. Then a sentence.",
        ),
        (
            [" Released in", " 2005. Another rewrite", " 1.6 clients work."],
            "Released in 2005. Another rewrite 1.6 clients work.",
        ),
        (["  >>> from x import y", "  >>> y(17)"], ">>> from x import y >>> y(17)"),
        ([" Tabs\tand   runs  ", "  .", " ."], "Tabs and runs"),
        ([" *", " -"], ""),
        ([], ""),
    ],
)
def test_reflow(lines: list[str], text: str) -> None:
    assert load_builder().reflow(lines) == text


def test_truncate_cuts_at_a_space() -> None:
    bd = load_builder()
    assert bd.truncate("short text", 20) == "short text"
    assert bd.truncate("one two three four", 12) == "one two"
    assert bd.truncate("one two three", 7) == "one two"
    assert bd.truncate("abcdefghij", 4) == "abcd"


# ---------------------------------------------------------------- parsing and selection


def _stanza(name: str, synopsis: str, *body: str) -> str:
    text = "\n".join([synopsis, *body])
    lines = [f"Package: {name}", f"Description-md5: {hashlib.md5(text.encode()).hexdigest()}"]
    lines.append(f"Description-en: {synopsis}")
    lines += [f" {line}" if line != "." else " ." for line in body]
    return "\n".join(lines) + "\n"


def _pkg_body(i: int) -> str:
    return f"Tool {i} reads format {i} and writes it out again, with options {i * 7}."


def synthetic_list(n: int = 60) -> str:
    """A small Translation-en: n ordinary packages (file order not sorted), plus one record for each rule."""
    stanzas = [_stanza(f"tool{i:03d}", f"converter number {i}", _pkg_body(i)) for i in reversed(range(n))]
    stanzas += [
        _stanza("multi", "per-architecture text", "Points to the amd64 runtime of something long."),
        _stanza("multi", "per-architecture text", "Points to the i386 runtime of something long."),
        _stanza(
            "oldname", "transitional package for newname", "This package can be safely removed after upgrade."
        ),
        _stanza("tiny", "a tiny description", "Too short."),
        _stanza("twin-b", "shared pair synopsis", "The same text under two names, long enough to keep."),
        _stanza("twin-a", "shared pair synopsis", "The same text under two names, long enough to keep."),
        _stanza("cpp-a", "GNU C preprocessor", "Preprocessor for the amd64 target, long enough to keep."),
        _stanza("cpp-b", "gnu c preprocessor", "Preprocessor for the arm64 target, long enough to keep."),
        _stanza(
            "hs-prof-a",
            "a parser; profiling libraries",
            "This package provides a library, compiled for profiling.",
        ),
        _stanza(
            "hs-prof-b",
            "a printer; profiling libraries",
            "This package provides a library, compiled for profiling.",
        ),
        _stanza(
            "lists", "list formats", "Reads:", ".", "  * csv", "  * tsv", ".", "Nothing else is needed here."
        ),
    ]
    return "\n".join(stanzas)


def test_parse_translation_reads_every_stanza() -> None:
    records = load_builder().parse_translation(synthetic_list(3), "Translation-en")
    assert [r.name for r in records][:3] == ["tool002", "tool001", "tool000"]
    assert [r.line for r in records[:2]] == [1, 6]
    lists = records[-1]
    assert (lists.name, lists.synopsis) == ("lists", "list formats")
    assert lists.body == (" Reads:", " .", "   * csv", "   * tsv", " .", " Nothing else is needed here.")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "Package: Foo\nDescription-en: x\n y\n",
            r"Translation-en:1: package name 'Foo' is not a Debian package name",
        ),
        (
            "Package: foo bar\nDescription-en: x\n y\n",
            r"Translation-en:1: package name 'foo bar' is not a Debian",
        ),
        ("\nPackage: foo\nDescription-md5: 0\n", r"Translation-en:2: stanza without a Description-en field"),
        (" stray\nPackage: foo\n", r"Translation-en:1: continuation line outside a field"),
        ("Package: foo\nno colon here\n", r"Translation-en:2: not a 'Field: value' line"),
        ("Package: foo\nPackage: bar\n", r"Translation-en:2: field 'Package' twice in one stanza"),
    ],
)
def test_parse_translation_rejects_malformed_lists(text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_builder().parse_translation(text, "Translation-en")


def test_select_packages_applies_each_rule_once() -> None:
    bd = load_builder()
    selection = bd.select_packages(bd.parse_translation(synthetic_list(60)))
    names = [p.name for p in selection.packages]
    assert names == sorted(names)
    assert set(names) == {f"tool{i:03d}" for i in range(60)} | {"twin-a", "lists"}
    assert selection.counts == {
        "records": 71,
        "multi_record_names": 1,
        "multi_record_records": 2,
        "transitional": 1,
        "short": 1,
        "duplicate_pairs": 1,
        "shared_synopsis": 2,
        "shared_description": 2,
        "ambiguous": 4,
        "usable": 62,
    }
    lists = next(p for p in selection.packages if p.name == "lists")
    assert lists.doc_text == "Reads: csv; tsv. Nothing else is needed here."
    assert (lists.query_id, lists.query_text) == ("qlists", "list formats")


# ---------------------------------------------------------------- the build

SIZES = {"test": 10, "dev": 5, "demo_sizes": (3, 6, 30)}


def _write_list(folder: Path, text: str) -> tuple[Path, Path]:
    """A Translation-en file and an InRelease that lists its sha256, as apt would have them."""
    folder.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    translation = folder / "Translation-en"
    translation.write_bytes(data)
    release = folder / "InRelease"
    release.write_text(
        "Origin: Debian\nSuite: stable\nVersion: 12.99\nCodename: testworm\nDate: Sat, 01 Jan 2000 00:00:00 UTC\n"
        f"MD5Sum:\n {hashlib.md5(data).hexdigest()} {len(data)} main/i18n/Translation-en\n"
        f"SHA256:\n {'0' * 64} 12 main/i18n/Translation-de\n"
        f" {hashlib.sha256(data).hexdigest()} {len(data)} main/i18n/Translation-en\n"
    )
    return translation, release


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_is_deterministic_and_loads(tmp_path: Path) -> None:
    bd = load_builder()
    translation, release = _write_list(tmp_path / "lists", synthetic_list(60))
    counts = bd.build(translation, tmp_path / "a", release, **SIZES)
    assert counts == {
        "debian": {"corpus": 62, "test": 10, "dev": 5, "train": 47},
        "debian-demo": {"corpus": 30, "test": 10, "dev": 3, "train": 6},
    }
    bd.build(translation, tmp_path / "b", release, **SIZES)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(first) == 2 * 7
    assert first == second
    assert first["debian/corpus.jsonl.gz"][3:8] == b"\0\0\0\0\0"  # no file name flag, mtime 0
    for name in ("debian", "debian-demo"):
        ds = load_beir(tmp_path / "a" / name)
        assert _counts(ds) == counts[name]
        for split in ds.splits:
            assert all(judged == {qid[1:]: 1} for qid, judged in ds.qrels[split].items())
    card = (tmp_path / "a" / "debian" / "README.md").read_text()
    assert (
        "- release: Debian 12.99 (testworm / stable), Release file dated Sat, 01 Jan 2000 00:00:00 UTC"
        in card
    )
    assert (
        f"`{hashlib.sha256(translation.read_bytes()).hexdigest()}` (matches the sha256 the InRelease" in card
    )
    assert "1 package names with several records" in card and "62 packages remain." in card


def test_build_reads_compressed_lists_to_the_same_corpus(tmp_path: Path) -> None:
    bd = load_builder()
    translation, _ = _write_list(tmp_path / "lists", synthetic_list(60))
    packed = tmp_path / "lists" / "Translation-en.gz"
    packed.write_bytes(gzip.compress(translation.read_bytes()))
    bd.build(translation, tmp_path / "plain", None, **SIZES)
    bd.build(packed, tmp_path / "gz", None, **SIZES)
    plain, gz = _files(tmp_path / "plain"), _files(tmp_path / "gz")
    assert {k: v for k, v in plain.items() if "README" not in k} == {
        k: v for k, v in gz.items() if "README" not in k
    }
    assert "release: not recorded" in plain["debian/README.md"].decode()


def test_build_refuses_a_release_file_with_another_checksum(tmp_path: Path) -> None:
    bd = load_builder()
    translation, release = _write_list(tmp_path / "lists", synthetic_list(60))
    translation.write_text(synthetic_list(61))  # an `apt-get update` later
    with pytest.raises(
        DatasetError, match=r"InRelease: lists main/i18n/Translation-en with sha256 [0-9a-f]{64} "
    ):
        bd.build(translation, tmp_path / "out", release, **SIZES)
    assert not (tmp_path / "out").exists()


def test_build_refuses_too_few_packages(tmp_path: Path) -> None:
    bd = load_builder()
    translation, release = _write_list(tmp_path / "lists", synthetic_list(20))
    with pytest.raises(
        DatasetError, match=r"Translation-en: only 22 usable packages; need more than 15 for test"
    ):
        bd.build(translation, tmp_path / "out", release, **SIZES)
    assert not (tmp_path / "out").exists()


def test_find_apt_lists_picks_the_main_suite(tmp_path: Path) -> None:
    bd = load_builder()
    for name in (
        "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en.lz4",
        "deb.debian.org_debian_dists_bookworm-updates_main_i18n_Translation-en.lz4",
        "deb.debian.org_debian-security_dists_bookworm-security_main_i18n_Translation-en.lz4",
        "deb.debian.org_debian_dists_bookworm_InRelease",
    ):
        (tmp_path / name).write_text("")
    translation, release = bd.find_apt_lists(tmp_path)
    assert translation.name == "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en.lz4"
    assert release == tmp_path / "deb.debian.org_debian_dists_bookworm_InRelease"
    (tmp_path / translation.name).unlink()
    with pytest.raises(
        DatasetError, match=r"expected one main-suite Translation-en list, found none; run `apt-get"
    ):
        bd.find_apt_lists(tmp_path)


def test_main_reports_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = load_builder().main(["--translation", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and re.fullmatch(
        r"error: .*missing: cannot read the Translation-en file \(.+\)", err[0]
    )
    assert not (tmp_path / "out").exists()


def _apt_list_of_the_snapshot() -> tuple[Path, Path | None] | None:
    """The apt list the shipped files were built from, when this machine has that very list (same sha256)."""
    bd = load_builder()
    card = (DATA_DIR / "debian" / "README.md").read_text(encoding="utf-8")
    wanted = re.search(r"sha256 of the decompressed list: `([0-9a-f]{64})`", card).group(1)
    try:
        translation, release = bd.find_apt_lists()
        data = bd.read_translation(translation)
    except DatasetError:
        return None
    return (translation, release) if hashlib.sha256(data).hexdigest() == wanted else None


@pytest.mark.slow  # reads the 33 MB list and rebuilds both datasets (~15 s)
def test_builder_reproduces_the_shipped_files(tmp_path: Path) -> None:
    found = _apt_list_of_the_snapshot()
    if found is None:
        pytest.skip(
            "needs apt's Translation-en list with the sha256 recorded in datamodules/data/debian/README.md"
        )
    bd = load_builder()
    counts = bd.build(found[0], tmp_path, found[1])
    assert counts["debian-demo"] == {"corpus": 10_000, "test": 2_000, "dev": 500, "train": 2_000}
    built = _files(tmp_path)
    assert len(built) == 2 * 7
    for rel, data in built.items():
        assert data == (DATA_DIR / rel).read_bytes(), rel
