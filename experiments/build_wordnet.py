"""Build the built-in `wordnet`, `wordnet-demo` and `wordnet-mini` retrieval datasets from WordNet 3.0's data files.

The task is a reverse dictionary: the query is a synset's gloss definition, the one relevant document is the
synset itself, written as its lemma names followed by the gloss's example sentences ("lemmas. examples").
Only synsets whose gloss has example sentences take part, so that no document is a bare list of words.

Input: Debian's `wordnet-base` package (`apt-get install wordnet-base`), i.e. /usr/share/wordnet/data.{noun,
verb,adj,adv} and the licence in /usr/share/doc/wordnet-base/copyright. The data-file format (wndb(5WN)) is
parsed here directly; nltk is not needed.

Output, in BEIR format with gzip-compressed files, under --out (default datamodules/data):
    wordnet/       every usable synset; splits test 2,000 / dev 1,000 / train the rest
    wordnet-demo/  all test queries, 500 dev, 2,000 train, and a 10,000-document corpus
    wordnet-mini/  a subset of wordnet-demo for `make demo`: 1,000 test, 500 dev, 1,000 train queries and a
                   5,000-document corpus (7,500 texts: half the demo store's embedding time)
Each folder also gets README.md (dataset card) and LICENSE (WordNet 3.0's licence, which must travel with the
data). The build is deterministic: rerunning it writes byte-identical files.

    python experiments/build_wordnet.py [--wordnet-dir /usr/share/wordnet] [--out datamodules/data]
"""

import argparse
import gzip
import json
import random
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import DatasetError

POS_FILES = ("noun", "verb", "adj", "adv")
SS_TYPES = frozenset("nvasr")
DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
DEFAULT_LICENSE_FILE = Path("/usr/share/doc/wordnet-base/copyright")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "datamodules" / "data"

SPLIT_SEED = 0
TEST_SIZE = 2_000
DEV_SIZE = 1_000
DEMO_DEV = 500
DEMO_TRAIN = 2_000
DEMO_CORPUS = 10_000
DEMO_FILL_SEED = 1
MINI_TEST = 1_000
MINI_TRAIN = 1_000
MINI_CORPUS = 5_000
MINI_FILL_SEED = 2

# Adjective lemmas may carry a syntactic marker, e.g. "galore(ip)"; it is not part of the word.
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")
# Examples are separated by '; ' next to a double quote (a ';' inside a quoted example is text), or, in a few
# hundred glosses, by '", "', '" "', '": "' or '" or "' between a closing and an opening quote.
_EXAMPLE_SEPARATOR = re.compile(r'(?<=")\s*;\s*|\s*;\s*(?=")|(?<=")(?:\s*[,:.]\s*|\s+or\s+|\s+)(?=")')


@dataclass(frozen=True)
class Synset:
    """One synset from a WordNet data file, reduced to what the retrieval task uses."""

    offset: str
    ss_type: str
    lemmas: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]

    @property
    def doc_id(self) -> str:
        """Part-of-speech letter + 8-digit offset; offsets alone repeat across the four data files."""
        return self.ss_type + self.offset

    @property
    def query_id(self) -> str:
        return "q" + self.doc_id

    @property
    def doc_text(self) -> str:
        """The WordNet pilot's "lemmas. examples" document (docs/methods.md#pilot-setup)."""
        return ", ".join(self.lemmas) + ". " + " ".join(self.examples)

    @property
    def query_text(self) -> str:
        return self.definition


def _example_start(gloss: str) -> int | None:
    """Index of the double quote that opens the examples, or None when the gloss has none.

    WordNet writes `definition; "example"; "example"`, but about 1% of glosses deviate: a ':' or ',' before the
    first example, a quoted phrase inside the definition ("especially in the phrase "make strides""), quotes in
    parentheses. A quote counts as the start when it is outside parentheses and follows ';', ':', ',' or
    nothing; failing that, the first quote outside parentheses (e.g. `woven of worsted yarns "he wore ..."`).
    """
    depth = 0
    fallback = None
    for i, ch in enumerate(gloss):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == '"' and depth == 0:
            before = gloss[:i].rstrip()
            if not before or before[-1] in ";:,":
                return i
            if fallback is None:
                fallback = i
    return fallback


def _clean_example(segment: str) -> str:
    """The quoted sentence of one example segment; attributions after the closing quote are dropped.

    `"the quality of mercy is not strained"--Shakespeare` -> `the quality of mercy is not strained`; a segment
    with one quote only (WordNet sometimes omits the opening or the closing one) keeps the side that is text.
    A segment with no quote at all is a usage remark such as "(`alright' is a nonstandard variant ...)".
    """
    segment = segment.strip()
    first, last = segment.find('"'), segment.rfind('"')
    if first < 0:
        return ""
    if first != last:
        return segment[first + 1 : last].strip()
    return (segment[first + 1 :] if first == 0 else segment[:first]).strip()


def split_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """Split a WordNet gloss into (definition, example sentences)."""
    gloss = gloss.strip()
    start = _example_start(gloss)
    if start is None:
        return gloss.rstrip(" ;"), ()
    definition = gloss[:start].rstrip(" ;:,")
    examples = (_clean_example(part) for part in _EXAMPLE_SEPARATOR.split(gloss[start:]))
    return definition, tuple(e for e in examples if e)


def _lemma_name(word: str) -> str:
    return _ADJ_MARKER.sub("", word).replace("_", " ")


def parse_data_line(line: str, where: str = "<data>") -> Synset | None:
    """Parse one line of a WordNet data file; None for the licence header lines (they start with two spaces).

    Format: `offset lex_filenum ss_type w_cnt word lex_id ... p_cnt [ptr x4 ...] [f_cnt frames] | gloss`, with
    w_cnt two hex digits and p_cnt three decimal digits. `where` ("file:line") goes into error messages.
    """
    if line.startswith("  ") or not line.strip():
        return None
    head, sep, gloss = line.rstrip("\r\n").partition(" | ")
    fields = head.split()
    expected = "expected 'offset lex_filenum ss_type w_cnt word lex_id ... p_cnt pointers ... | gloss'"
    if not sep or len(fields) < 6:
        raise DatasetError(f"{where}: not a WordNet data line; {expected}")
    offset, ss_type = fields[0], fields[2]
    if not (len(offset) == 8 and offset.isdigit()) or ss_type not in SS_TYPES:
        raise DatasetError(f"{where}: bad synset offset {offset!r} or ss_type {ss_type!r}; {expected}")
    try:
        w_cnt = int(fields[3], 16)
        p_index = 4 + 2 * w_cnt
        p_cnt = int(fields[p_index])
    except (ValueError, IndexError):
        raise DatasetError(f"{where}: bad word or pointer count; {expected}") from None
    rest = len(fields) - (p_index + 1 + 4 * p_cnt)
    # Verb synsets end with a frame list: f_cnt, then three fields per frame ("+ f_num w_num").
    frames_ok = rest == 0 or (
        ss_type == "v" and rest > 0 and fields[-rest].isdigit() and rest == 1 + 3 * int(fields[-rest])
    )
    if w_cnt == 0 or not frames_ok:
        raise DatasetError(f"{where}: {w_cnt} words and {p_cnt} pointers do not match the line; {expected}")
    lemmas = tuple(dict.fromkeys(_lemma_name(w) for w in fields[4:p_index:2]))
    definition, examples = split_gloss(gloss)
    return Synset(offset, ss_type, lemmas, definition, examples)


def parse_data_file(path: Path) -> list[Synset]:
    """Every synset in one WordNet data file, in file order."""
    synsets = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            synset = parse_data_line(line, f"{path}:{lineno}")
            if synset is not None:
                synsets.append(synset)
    return synsets


def load_synsets(wordnet_dir: Path) -> tuple[int, list[Synset]]:
    """(number of synsets read, the usable ones sorted by document id): those with a definition and examples."""
    missing = [str(wordnet_dir / f"data.{p}") for p in POS_FILES if not (wordnet_dir / f"data.{p}").is_file()]
    if missing:
        raise DatasetError(
            f"missing WordNet data files: {', '.join(missing)}; expected data.noun, data.verb, data.adj and "
            "data.adv (Debian: apt-get install wordnet-base)"
        )
    total = 0
    usable = []
    for pos in POS_FILES:
        synsets = parse_data_file(wordnet_dir / f"data.{pos}")
        total += len(synsets)
        usable += [s for s in synsets if s.examples and s.definition]
    usable.sort(key=lambda s: s.doc_id)
    ids = [s.doc_id for s in usable]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{wordnet_dir}: duplicate synset ids across data files")
    return total, usable


def make_splits(doc_ids: Sequence[str], test: int = TEST_SIZE, dev: int = DEV_SIZE) -> dict[str, list[str]]:
    """Seeded split of the sorted ids, each split in shuffled order (so "the first n" is a random sample)."""
    order = sorted(doc_ids)
    if len(order) <= test + dev:
        raise DatasetError(f"only {len(order)} usable synsets; need more than {test + dev} for test + dev")
    random.Random(SPLIT_SEED).shuffle(order)
    return {"test": order[:test], "dev": order[test : test + dev], "train": order[test + dev :]}


def demo_subset(
    doc_ids: Sequence[str],
    splits: dict[str, list[str]],
    dev: int = DEMO_DEV,
    train: int = DEMO_TRAIN,
    corpus: int = DEMO_CORPUS,
    test: int | None = None,
    fill_seed: int = DEMO_FILL_SEED,
) -> tuple[list[str], dict[str, list[str]]]:
    """A subset's (corpus ids, splits): the first `test` (default: every), `dev` and `train` queries, their
    documents, and a seeded random fill from the other documents up to `corpus` documents."""
    demo_splits = {
        "test": splits["test"][:test],
        "dev": splits["dev"][:dev],
        "train": splits["train"][:train],
    }
    needed = {d for ids in demo_splits.values() for d in ids}
    rest = sorted(set(doc_ids) - needed)
    fill = random.Random(fill_seed).sample(rest, corpus - len(needed))
    return sorted(needed | set(fill)), demo_splits


def _write_gzip(path: Path, lines: Iterable[str]) -> None:
    """gzip with mtime=0 and no file name in the header, so that rebuilding gives identical bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(lines).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(data)


def _jsonl(records: Iterable[dict[str, str]]) -> Iterable[str]:
    return (json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_beir(out_dir: Path, synsets: dict[str, Synset], corpus_ids: Sequence[str], splits: dict) -> None:
    """Write corpus, queries (sorted by id, every split) and qrels/<split>.tsv.gz (sorted by query id)."""
    _write_gzip(
        out_dir / "corpus.jsonl.gz",
        _jsonl({"_id": d, "text": synsets[d].doc_text} for d in sorted(corpus_ids)),
    )
    query_docs = sorted(d for ids in splits.values() for d in ids)
    _write_gzip(
        out_dir / "queries.jsonl.gz",
        _jsonl({"_id": synsets[d].query_id, "text": synsets[d].query_text} for d in query_docs),
    )
    for split, ids in splits.items():
        rows = sorted(f"{synsets[d].query_id}\t{d}\t1\n" for d in ids)
        _write_gzip(out_dir / "qrels" / f"{split}.tsv.gz", ["query-id\tcorpus-id\tscore\n", *rows])


def license_notice(copyright_file: Path) -> str:
    """WordNet 3.0's licence text from a Debian machine-readable copyright file (the 'License: WordNet3.0'
    paragraph), with the format's one-space indent and ' .' blank-line markers undone."""
    try:
        lines = copyright_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(
            f"{copyright_file}: cannot read the WordNet licence ({exc.strerror}); expected Debian's "
            "wordnet-base copyright file"
        ) from None
    start = next((i for i, line in enumerate(lines) if line.strip() == "License: WordNet3.0"), None)
    if start is None:
        raise DatasetError(f"{copyright_file}: no 'License: WordNet3.0' paragraph found")
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break
        body.append("" if line.strip() == "." else line[1:].rstrip())
    return "\n".join(body).strip() + "\n"


_CARD = """\
# {name}: WordNet 3.0 reverse dictionary (BEIR format)

{summary}

## Task
Reverse dictionary: given a definition, find the word sense it defines.
- **Query** (`queries.jsonl.gz`): a synset's gloss definition, without its example sentences.
  Id: `q` + document id.
- **Document** (`corpus.jsonl.gz`): the synset's lemma names (underscores as spaces, joined with ", "), ". ",
  then the gloss's example sentences joined with a space. Id: part-of-speech letter (`n`, `v`, `a`, `s`
  satellite adjective, `r` adverb) + the synset's 8-digit offset in WordNet 3.0, e.g. `n02084071`.
- **Relevance** (`qrels/<split>.tsv.gz`): exactly one relevant document per query (score 1): its own synset.

Example:
- query `{example_qid}`: {example_query}
- document `{example_did}`: {example_doc}

## Counts
| split | queries |
|---|---|
{split_rows}
| corpus | {n_docs:,} documents |

## How it was built
`python experiments/build_wordnet.py` from Debian's `wordnet-base` package (WordNet 3.0 data files
`data.noun`, `data.verb`, `data.adj`, `data.adv`). Of {n_total:,} synsets, the {n_usable:,} whose gloss has
example sentences (quoted strings after the definition) and a non-empty definition are used. Glosses are
split at the first double quote outside parentheses that follows `;`, `:`, `,` or the start; attributions
after an example's closing quote (`"..." - Shakespeare`) are dropped.
Splits: the sorted document ids are shuffled with `random.Random({split_seed})`; the first {test:,} are
test, the next {dev:,} dev, the rest train. No query appears in two splits.
{demo_note}
Files are gzip-compressed with mtime 0; rebuilding gives byte-identical files.

## Licence
WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Distributed under the WordNet 3.0
licence, reproduced in `LICENSE`, which must accompany any copy of these files.
"""


def write_card(
    out_dir: Path,
    name: str,
    summary: str,
    synsets: dict[str, Synset],
    n_docs: int,
    splits: dict[str, list[str]],
    n_total: int,
    n_usable: int,
    demo_note: str = "",
) -> None:
    example = synsets[splits["test"][0]]
    text = _CARD.format(
        name=name,
        summary=summary,
        example_qid=example.query_id,
        example_query=example.query_text,
        example_did=example.doc_id,
        example_doc=example.doc_text,
        split_rows="\n".join(f"| {s} | {len(ids):,} |" for s, ids in splits.items()),
        n_docs=n_docs,
        n_total=n_total,
        n_usable=n_usable,
        split_seed=SPLIT_SEED,
        test=TEST_SIZE,
        dev=DEV_SIZE,
        demo_note=demo_note,
    )
    (out_dir / "README.md").write_text(text, encoding="utf-8")


def build(wordnet_dir: Path, out: Path, copyright_file: Path) -> dict[str, dict[str, int]]:
    """Build the three datasets under `out`; returns {dataset: {"corpus": n, split: n, ...}}."""
    notice = license_notice(copyright_file)
    n_total, usable = load_synsets(wordnet_dir)
    synsets = {s.doc_id: s for s in usable}
    doc_ids = list(synsets)
    splits = make_splits(doc_ids)
    demo_ids, demo_splits = demo_subset(doc_ids, splits)
    # Drawn from the demo, not from the full set, so that wordnet-mini ⊂ wordnet-demo ⊂ wordnet.
    mini_ids, mini_splits = demo_subset(
        demo_ids, demo_splits, DEMO_DEV, MINI_TRAIN, MINI_CORPUS, test=MINI_TEST, fill_seed=MINI_FILL_SEED
    )

    datasets = {
        "wordnet": (
            doc_ids,
            splits,
            "Every WordNet 3.0 synset whose gloss has example sentences.",
            "",
        ),
        "wordnet-demo": (
            demo_ids,
            demo_splits,
            f"A {DEMO_CORPUS:,}-document subset of the `wordnet` dataset, small enough to encode on a laptop.",
            f"\nThe demo keeps all {TEST_SIZE:,} test queries, the first {DEMO_DEV} dev and the first "
            f"{DEMO_TRAIN:,} train queries (in shuffled order), the documents of all of them, and a random "
            f"fill (`random.Random({DEMO_FILL_SEED})`) from the other documents up to {DEMO_CORPUS:,}.\n",
        ),
        "wordnet-mini": (
            mini_ids,
            mini_splits,
            f"A {MINI_CORPUS:,}-document subset of `wordnet-demo`, sized for `make demo` to finish in minutes.",
            f"\nThe mini set keeps the first {MINI_TEST:,} test, {DEMO_DEV} dev and {MINI_TRAIN:,} train queries of "
            f"`wordnet-demo`, the documents of all of them, and a random fill (`random.Random({MINI_FILL_SEED})`) "
            f"from wordnet-demo's other documents up to {MINI_CORPUS:,}.\n",
        ),
    }
    counts = {}
    for name, (ids, split_ids, summary, note) in datasets.items():
        folder = out / name
        write_beir(folder, synsets, ids, split_ids)
        write_card(folder, name, summary, synsets, len(ids), split_ids, n_total, len(usable), note)
        (folder / "LICENSE").write_text(notice, encoding="utf-8")
        counts[name] = {"corpus": len(ids), **{s: len(v) for s, v in split_ids.items()}}
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wordnet-dir", type=Path, default=DEFAULT_WORDNET_DIR, help="folder with data.noun etc."
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where wordnet/, wordnet-demo/ and wordnet-mini/ go"
    )
    parser.add_argument(
        "--license-file",
        type=Path,
        default=DEFAULT_LICENSE_FILE,
        help="Debian copyright file with the licence",
    )
    args = parser.parse_args(argv)
    try:
        counts = build(args.wordnet_dir, args.out, args.license_file)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, c in counts.items():
        splits = ", ".join(f"{s} {n:,}" for s, n in c.items() if s != "corpus")
        print(f"{args.out / name}: {c['corpus']:,} documents; queries: {splits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
