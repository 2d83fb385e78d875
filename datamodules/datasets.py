"""Retrieval datasets: BEIR-format folders and the built-in WordNet and Debian datasets.

A BEIR folder holds
    corpus.jsonl       one JSON object per line: "_id", "text", optional "title"
    queries.jsonl      one JSON object per line: "_id", "text"
    qrels/<split>.tsv  "query-id<TAB>corpus-id<TAB>score" with a header line and integer graded relevance
each optionally gzip-compressed (corpus.jsonl.gz, ...), which is how the built-in data ships. Everything is
validated on load, so a bad file fails here with its name and line number rather than deep inside a run.

This module is imported by the CLI at start-up: standard library only.
"""

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from datamodules.errors import DatasetError
from datamodules.paths import name_problem

__all__ = ["BUILTIN_DATASETS", "DATA_DIR", "RetrievalDataset", "TextSet", "load_beir", "load_dataset"]

DATA_DIR = Path(__file__).resolve().parent / "data"

BUILTIN_DATASETS: Mapping[str, str] = MappingProxyType(
    {
        "wordnet": "WordNet 3.0 reverse dictionary: 32,925 synsets; queries test 2,000 / dev 1,000 / train 29,925",
        "wordnet-demo": "WordNet subset: 10,000 documents; queries test 2,000 / dev 500 / train 2,000",
        "wordnet-mini": "wordnet-demo subset for `make demo`: 5,000 documents; queries test 1,000 / dev 500 / "
        "train 1,000",
        "debian": "Debian 12 package synopsis -> description: 57,816 packages; queries test 2,000 / dev 1,000 / "
        "train 54,816",
        "debian-demo": "Debian subset: 10,000 documents; queries test 2,000 / dev 500 / train 2,000",
    }
)
# How to rebuild a built-in dataset whose folder is missing.
_BUILTIN_BUILDERS: Mapping[str, str] = MappingProxyType(
    {
        "wordnet": "`python experiments/build_wordnet.py` (needs Debian's wordnet-base)",
        "wordnet-demo": "`python experiments/build_wordnet.py` (needs Debian's wordnet-base)",
        "wordnet-mini": "`python experiments/build_wordnet.py` (needs Debian's wordnet-base)",
        "debian": "`python experiments/build_debian.py` (needs apt's English Translation-en list)",
        "debian-demo": "`python experiments/build_debian.py` (needs apt's English Translation-en list)",
    }
)

_BEIR_LAYOUT = (
    "expected a BEIR folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv (optionally .gz)"
)
_QRELS_HEADER = "query-id"
# Bytes that are not UTF-8 decode to lone surrogates under "surrogateescape": the line and column are then known.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# Ids are single tokens (BEIR's are): TREC run files and qrels are whitespace-separated.
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class TextSet:
    """Texts to encode, with their ids, in a fixed order (row i of an embedding matrix is ids[i])."""

    ids: list[str]
    texts: list[str]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.texts):
            raise ValueError(f"TextSet: {len(self.ids)} ids but {len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class RetrievalDataset:
    """A validated retrieval dataset.

    queries[split] holds the queries named in that split's qrels, in queries-file order; qrels[split] maps
    query id -> document id -> graded relevance. fingerprint is a sha256 over the bytes of the corpus, queries
    and every qrels file in the folder (not only the loaded splits), so it identifies the data that embeddings
    were computed from whatever splits a run asks for.
    """

    name: str
    path: Path
    corpus: TextSet
    queries: dict[str, TextSet]
    qrels: dict[str, dict[str, dict[str, int]]]
    fingerprint: str

    @property
    def splits(self) -> list[str]:
        return list(self.qrels)

    def text_sets(self) -> dict[str, TextSet]:
        """Everything to embed: {"corpus": ..., "queries/<split>": ...} for every split."""
        return {"corpus": self.corpus, **{f"queries/{s}": q for s, q in self.queries.items()}}


def _find_file(folder: Path, stem: str) -> Path | None:
    """`stem` or `stem.gz` in folder; both at once is ambiguous and refused."""
    plain, packed = folder / stem, folder / f"{stem}.gz"
    if plain.is_file() and packed.is_file():
        raise DatasetError(f"{folder}: both {stem} and {stem}.gz exist; keep one")
    if plain.is_file():
        return plain
    return packed if packed.is_file() else None


def _split_name(path: Path) -> str:
    name = path.name
    split = name[: -len(".tsv.gz")] if name.endswith(".tsv.gz") else name[: -len(".tsv")]
    problem = name_problem(split)
    if problem is not None:
        # The split names folders of the store (queries/<split>): "..tsv" would name the store's parent.
        raise DatasetError(
            f"{path}: split name {split!r} (the file name without .tsv) cannot be a folder name: {problem}; "
            "rename the file"
        )
    return split


def _qrels_files(folder: Path) -> dict[str, Path]:
    """split -> qrels file, sorted by split name."""
    qdir = folder / "qrels"
    if not qdir.is_dir():
        return {}
    files = {}
    for p in sorted(qdir.iterdir()):
        if p.is_file() and p.name.endswith((".tsv", ".tsv.gz")):
            split = _split_name(p)
            if split in files:
                raise DatasetError(f"{qdir}: both {split}.tsv and {split}.tsv.gz exist; keep one")
            files[split] = p
    return files


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) for every non-blank line, gzip or plain; read errors name the
    file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="surrogateescape", newline="") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                bad = _UNDECODABLE.search(line)
                if bad:
                    byte = ord(bad.group()) - 0xDC00
                    raise DatasetError(
                        f"{path}:{lineno}: not UTF-8 text (byte 0x{byte:02x} at column {bad.start() + 1}); "
                        "expected UTF-8"
                    )
                if line.strip():
                    yield lineno, line
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc or type(exc).__name__})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_jsonl(path: Path, kind: str) -> tuple[list[str], list[str]]:
    """ids and texts of a corpus or queries file; a corpus title is prepended to its text (BEIR convention)."""
    ids: list[str] = []
    texts: list[str] = []
    first_line: dict[str, int] = {}
    expected = 'expected one JSON object per line with "_id" and "text"'
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: invalid JSON ({exc.msg}); {expected}") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: a JSON {type(record).__name__}, not an object; {expected}")
        for key in ("_id", "text"):
            if key not in record:
                raise DatasetError(f'{where}: missing "{key}"; {expected}')
        doc_id, text = record["_id"], record["text"]
        # Some BEIR exports write numeric ids; they are the same ids as strings in the qrels.
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id:
            raise DatasetError(f'{where}: "_id" must be a non-empty string, got {record["_id"]!r}')
        if _WHITESPACE.search(doc_id):
            raise DatasetError(
                f'{where}: "_id" {doc_id!r} contains whitespace; ids must be single tokens '
                "(TREC run files and qrels separate fields by whitespace)"
            )
        if not isinstance(text, str):
            raise DatasetError(f'{where}: "text" must be a string, got {type(text).__name__}')
        if doc_id in first_line:
            raise DatasetError(
                f"{where}: duplicate {kind} id {doc_id!r} (first on line {first_line[doc_id]})"
            )
        first_line[doc_id] = lineno
        title = record.get("title") if kind == "corpus" else None
        if title is not None and not isinstance(title, str):
            raise DatasetError(f'{where}: "title" must be a string, got {type(title).__name__}')
        ids.append(doc_id)
        texts.append(f"{title} {text}" if title and text else title or text)
    return ids, texts


def _read_qrels(path: Path, query_ids: set[str], doc_ids: set[str]) -> dict[str, dict[str, int]]:
    """qid -> docid -> relevance; every id must exist in the queries and corpus files."""
    qrels: dict[str, dict[str, int]] = {}
    expected = "expected 'query-id<TAB>corpus-id<TAB>integer score'"
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        fields = line.split("\t")
        if lineno == 1 and fields[0].strip() == _QRELS_HEADER:
            continue
        if len(fields) != 3:
            raise DatasetError(f"{where}: {len(fields)} tab-separated columns; {expected}")
        qid, did, score_text = (f.strip() for f in fields)
        try:
            score = int(score_text)
        except ValueError:
            raise DatasetError(f"{where}: score {score_text!r} is not an integer; {expected}") from None
        if qid not in query_ids:
            raise DatasetError(f"{where}: query id {qid!r} is not in queries.jsonl")
        if did not in doc_ids:
            raise DatasetError(f"{where}: document id {did!r} is not in the corpus")
        judged = qrels.setdefault(qid, {})
        if did in judged:
            raise DatasetError(f"{where}: duplicate judgement for query {qid!r} and document {did!r}")
        judged[did] = score
    return qrels


def _fingerprint(folder: Path, files: Sequence[Path]) -> str:
    """sha256 over (relative path, size, bytes) of each file, so renaming or swapping files changes it too."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(folder).as_posix()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def load_beir(
    path: str | Path, splits: Sequence[str] | None = None, name: str | None = None
) -> RetrievalDataset:
    """Load and validate a BEIR-format folder.

    splits: the qrels splits to load, in this order; None loads every qrels/<split>.tsv[.gz] found (sorted by
    name). name defaults to the folder's name. Raises DatasetError naming the file (and line) at fault.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder; {_BEIR_LAYOUT}")
    corpus_path = _find_file(folder, "corpus.jsonl")
    queries_path = _find_file(folder, "queries.jsonl")
    qrels_paths = _qrels_files(folder)
    if corpus_path is None:
        raise DatasetError(f"{folder / 'corpus.jsonl'}: missing; {_BEIR_LAYOUT}")
    if queries_path is None:
        raise DatasetError(f"{folder / 'queries.jsonl'}: missing; {_BEIR_LAYOUT}")
    if not qrels_paths:
        raise DatasetError(f"{folder / 'qrels'}: no <split>.tsv files; {_BEIR_LAYOUT}")
    if splits is None:
        wanted = list(qrels_paths)
    else:
        wanted = list(dict.fromkeys(splits))
        missing = [s for s in wanted if s not in qrels_paths]
        if missing:
            raise DatasetError(
                f"{folder / 'qrels' / (missing[0] + '.tsv')}: missing for requested split {missing[0]!r}; "
                f"available splits: {', '.join(qrels_paths)}"
            )

    doc_ids, doc_texts = _read_jsonl(corpus_path, "corpus")
    if not doc_ids:
        raise DatasetError(f"{corpus_path}: empty corpus; expected at least one document")
    query_ids, query_texts = _read_jsonl(queries_path, "query")
    doc_set, query_set = set(doc_ids), set(query_ids)

    qrels = {s: _read_qrels(qrels_paths[s], query_set, doc_set) for s in wanted}
    for split, judged in qrels.items():
        if not judged:
            raise DatasetError(
                f"{qrels_paths[split]}: no judgements; expected at least one "
                "'query-id<TAB>corpus-id<TAB>score' line after the header"
            )
    queries = {}
    for split, judged in qrels.items():
        rows = [i for i, qid in enumerate(query_ids) if qid in judged]
        queries[split] = TextSet([query_ids[i] for i in rows], [query_texts[i] for i in rows])

    return RetrievalDataset(
        name=name or folder.resolve().name,
        path=folder,
        corpus=TextSet(doc_ids, doc_texts),
        queries=queries,
        qrels=qrels,
        fingerprint=_fingerprint(folder, [corpus_path, queries_path, *qrels_paths.values()]),
    )


def load_dataset(name_or_path: str, splits: Sequence[str] | None = None) -> RetrievalDataset:
    """A built-in dataset by name (see BUILTIN_DATASETS), else a BEIR folder by path.

    A built-in name wins over a folder of the same name in the working directory; write "./wordnet" for that.
    """
    key = str(name_or_path)
    if key in BUILTIN_DATASETS:
        folder = DATA_DIR / key
        if not folder.is_dir():
            raise DatasetError(
                f"{folder}: the built-in dataset {key!r} is not installed; build it with "
                f"{_BUILTIN_BUILDERS[key]}"
            )
        return load_beir(folder, splits=splits, name=key)
    folder = Path(key).expanduser()
    if not folder.is_dir():
        raise DatasetError(
            f"{key}: not a built-in dataset ({', '.join(BUILTIN_DATASETS)}) and not a folder; {_BEIR_LAYOUT}"
        )
    return load_beir(folder, splits=splits)
