"""Tests for datamodules.datasets (BEIR loading and validation, the built-in WordNet data) and for the parser
in experiments/build_wordnet.py."""

import gzip
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from datamodules.datasets import (
    BUILTIN_DATASETS,
    DATA_DIR,
    RetrievalDataset,
    TextSet,
    load_beir,
    load_dataset,
)
from datamodules.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_LICENSE = Path("/usr/share/doc/wordnet-base/copyright")

CORPUS = [
    {"_id": "d2", "title": "Dogs", "text": "Dogs bark."},
    {"_id": "d1", "text": "Cats purr."},
    {"_id": "d3", "title": "", "text": "Birds sing."},
]
QUERIES = [
    {"_id": "q3", "text": "which animal sings"},
    {"_id": "q1", "text": "which animal purrs"},
    {"_id": "q2", "text": "which animal barks"},
]
QRELS = {
    "test": ["q2\td2\t1", "q1\td1\t2", "q1\td3\t0"],
    "train": ["q3\td3\t1"],
}


def _write(path: Path, text: str, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def make_beir(
    folder: Path,
    corpus: list | None = None,
    queries: list | None = None,
    qrels: dict | None = None,
    gz: bool = False,
    raw_corpus: str | None = None,
    raw_queries: str | None = None,
) -> Path:
    """A BEIR folder from records (or raw text for malformed-file tests); qrels get the standard header."""
    corpus = CORPUS if corpus is None else corpus
    queries = QUERIES if queries is None else queries
    qrels = QRELS if qrels is None else qrels
    jsonl = lambda records: "".join(json.dumps(r) + "\n" for r in records)  # noqa: E731
    _write(folder / "corpus.jsonl", jsonl(corpus) if raw_corpus is None else raw_corpus, gz)
    _write(folder / "queries.jsonl", jsonl(queries) if raw_queries is None else raw_queries, gz)
    for split, lines in qrels.items():
        _write(
            folder / "qrels" / f"{split}.tsv",
            "query-id\tcorpus-id\tscore\n" + "".join(f"{x}\n" for x in lines),
            gz,
        )
    return folder


def load_builder():
    """experiments/build_wordnet.py is a script, not a package module: import it by path."""
    spec = importlib.util.spec_from_file_location("build_wordnet", REPO / "experiments" / "build_wordnet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- loading


def test_load_plain_folder_orders_joins_titles_and_groups_queries_by_split(tmp_path: Path) -> None:
    ds = load_beir(make_beir(tmp_path / "tiny"))
    assert ds.name == "tiny"
    assert ds.path == tmp_path / "tiny"
    assert ds.corpus.ids == ["d2", "d1", "d3"]  # file order, not sorted
    assert ds.corpus.texts == ["Dogs Dogs bark.", "Cats purr.", "Birds sing."]  # empty title adds nothing
    assert ds.splits == ["test", "train"]
    # A split's queries follow queries.jsonl order (q1 before q2), not qrels order.
    assert ds.queries["test"] == TextSet(["q1", "q2"], ["which animal purrs", "which animal barks"])
    assert ds.queries["train"] == TextSet(["q3"], ["which animal sings"])
    # q1's zero-relevance judgement is kept: the evaluator decides what zeros mean.
    assert ds.qrels == {"test": {"q2": {"d2": 1}, "q1": {"d1": 2, "d3": 0}}, "train": {"q3": {"d3": 1}}}
    assert list(ds.text_sets()) == ["corpus", "queries/test", "queries/train"]
    assert ds.text_sets()["queries/train"] is ds.queries["train"]
    assert len(ds.corpus) == 3
    assert re.fullmatch(r"[0-9a-f]{64}", ds.fingerprint)


def test_gzipped_folder_loads_the_same_data(tmp_path: Path) -> None:
    plain = load_beir(make_beir(tmp_path / "plain"))
    packed = load_beir(make_beir(tmp_path / "packed", gz=True), name="custom")
    assert (tmp_path / "packed" / "qrels" / "test.tsv.gz").is_file()
    assert packed.name == "custom"
    assert (packed.corpus, packed.queries, packed.qrels) == (plain.corpus, plain.queries, plain.qrels)
    # The fingerprint covers file bytes, and gzip bytes differ from plain ones.
    assert packed.fingerprint != plain.fingerprint


def test_requested_splits_load_in_the_given_order(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "d", qrels={**QRELS, "dev": ["q3\td1\t1"]})
    assert load_beir(folder).splits == ["dev", "test", "train"]
    ds = load_beir(folder, splits=["train", "dev"])
    assert ds.splits == ["train", "dev"]
    assert list(ds.queries) == ["train", "dev"]
    assert ds.qrels["dev"] == {"q3": {"d1": 1}}


def test_fingerprint_is_stable_and_tracks_every_qrels_file(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "d")
    first = load_beir(folder).fingerprint
    assert load_beir(folder).fingerprint == first
    assert load_beir(folder, splits=["test"]).fingerprint == first  # same data whatever splits are loaded
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td3\t2\n")
    second = load_beir(folder, splits=["test"]).fingerprint
    assert second != first
    (folder / "corpus.jsonl").write_text((folder / "corpus.jsonl").read_text().replace("purr", "meow"))
    assert load_beir(folder).fingerprint not in {first, second}


def test_numeric_ids_and_headerless_qrels_are_accepted(tmp_path: Path) -> None:
    folder = make_beir(
        tmp_path / "d", corpus=[{"_id": 7, "text": "seven"}], queries=[{"_id": 1, "text": "q"}]
    )
    (folder / "qrels" / "test.tsv").write_text("1\t7\t1\n")
    ds = load_beir(folder, splits=["test"])
    assert ds.corpus.ids == ["7"]
    assert ds.qrels["test"] == {"1": {"7": 1}}


def test_text_set_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 ids but 1 texts"):
        TextSet(["a", "b"], ["x"])


# ---------------------------------------------------------------- errors


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError, match=r"nope: no such folder; expected a BEIR folder with corpus\.jsonl"
    ):
        load_beir(tmp_path / "nope")


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        (
            "corpus.jsonl",
            r"corpus\.jsonl: missing; expected a BEIR folder with corpus\.jsonl, queries\.jsonl",
        ),
        ("queries.jsonl", r"queries\.jsonl: missing; expected a BEIR folder"),
        ("qrels/test.tsv", r"qrels: no <split>\.tsv files; expected a BEIR folder"),
    ],
)
def test_missing_files(tmp_path: Path, remove: str, message: str) -> None:
    folder = make_beir(tmp_path / "d", qrels={"test": QRELS["test"]})
    (folder / remove).unlink()
    with pytest.raises(DatasetError, match=message):
        load_beir(folder)


def test_missing_requested_split(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "d")
    with pytest.raises(
        DatasetError,
        match=r"qrels/dev\.tsv: missing for requested split 'dev'; available splits: test, train",
    ):
        load_beir(folder, splits=["test", "dev"])


def test_plain_and_gzipped_copies_are_ambiguous(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "d")
    make_beir(tmp_path / "d", qrels={}, gz=True)
    with pytest.raises(DatasetError, match=r"both corpus\.jsonl and corpus\.jsonl\.gz exist; keep one"):
        load_beir(folder)


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "d", gz=True)
    (folder / "corpus.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=r"corpus\.jsonl\.gz: not a readable gzip file"):
        load_beir(folder)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": \n',
            r"corpus\.jsonl:2: invalid JSON \(Expecting value\)",
        ),
        (
            '\n\n["d1", "a"]\n',
            r"corpus\.jsonl:3: a JSON list, not an object; expected one JSON object per line",
        ),
        (
            '{"_id": "d1", "text": "a"}\n{"text": "b"}\n',
            r'corpus\.jsonl:2: missing "_id"; expected one JSON object',
        ),
        ('{"_id": "d1"}\n', r'corpus\.jsonl:1: missing "text"'),
        ('{"_id": "", "text": "a"}\n', r'corpus\.jsonl:1: "_id" must be a non-empty string'),
        ('{"_id": "d1", "text": 5}\n', r'corpus\.jsonl:1: "text" must be a string, got int'),
        (
            '{"_id": "d1", "title": ["t"], "text": "a"}\n',
            r'corpus\.jsonl:1: "title" must be a string, got list',
        ),
        (
            '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"}\n{"_id": "d1", "text": "c"}\n',
            r"corpus\.jsonl:3: duplicate corpus id 'd1' \(first on line 1\)",
        ),
        ("\n  \n", r"corpus\.jsonl: empty corpus; expected at least one document"),
    ],
)
def test_malformed_corpus(tmp_path: Path, raw: str, message: str) -> None:
    folder = make_beir(tmp_path / "d", raw_corpus=raw, qrels={"test": []})
    with pytest.raises(DatasetError, match=message):
        load_beir(folder)


def test_duplicate_query_id(tmp_path: Path) -> None:
    raw = '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n'
    folder = make_beir(tmp_path / "d", raw_queries=raw)
    with pytest.raises(DatasetError, match=r"queries\.jsonl:2: duplicate query id 'q1' \(first on line 1\)"):
        load_beir(folder)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "q1\td1",
            r"test\.tsv:3: 2 tab-separated columns; expected 'query-id<TAB>corpus-id<TAB>integer score'",
        ),
        ("q1 d1 1", r"test\.tsv:3: 1 tab-separated columns"),
        ("q1\td1\t1.5", r"test\.tsv:3: score '1\.5' is not an integer"),
        ("q9\td1\t1", r"test\.tsv:3: query id 'q9' is not in queries\.jsonl"),
        ("q1\td9\t1", r"test\.tsv:3: document id 'd9' is not in the corpus"),
        ("q2\td2\t0", r"test\.tsv:3: duplicate judgement for query 'q2' and document 'd2'"),
    ],
)
def test_malformed_qrels(tmp_path: Path, line: str, message: str) -> None:
    folder = make_beir(tmp_path / "d", qrels={"test": ["q2\td2\t1", line]})
    with pytest.raises(DatasetError, match=message):
        load_beir(folder)


@pytest.mark.parametrize("gz", [False, True])
def test_a_line_that_is_not_utf8_is_reported_with_its_number(tmp_path: Path, gz: bool) -> None:
    folder = make_beir(tmp_path / "d", gz=gz)
    name = "corpus.jsonl.gz" if gz else "corpus.jsonl"
    raw = b'{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "caf\xe9"}\n'
    (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(
        DatasetError, match=re.escape(f"{name}:2: not UTF-8 text (byte 0xe9 at column 27); expected UTF-8")
    ):
        load_beir(folder)


@pytest.mark.parametrize("doc_id", ["d 1", "d\t1", "d1\n", "\u00a0d1"])
def test_ids_with_whitespace_are_refused_with_file_and_line(tmp_path: Path, doc_id: str) -> None:
    corpus = [CORPUS[0], {**CORPUS[1], "_id": doc_id}]
    folder = make_beir(tmp_path / "d", corpus=corpus)
    with pytest.raises(
        DatasetError, match=re.escape(f'corpus.jsonl:2: "_id" {doc_id!r} contains whitespace; ids must be')
    ):
        load_beir(folder)


@pytest.mark.parametrize(("file", "split"), [("..tsv", "."), ("...tsv", ".."), (".tsv", "")])
def test_qrels_file_names_that_are_no_split_name_are_refused(tmp_path: Path, file: str, split: str) -> None:
    folder = make_beir(tmp_path / "d")
    (folder / "qrels" / file).write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(
        DatasetError,
        match=re.escape(
            f"{folder / 'qrels' / file}: split name {split!r} (the file name without .tsv) cannot"
        ),
    ):
        load_beir(folder)


def test_a_qrels_file_without_judgements_is_refused(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "d", qrels={**QRELS, "dev": []})
    with pytest.raises(
        DatasetError, match=re.escape(f"{folder / 'qrels' / 'dev.tsv'}: no judgements; expected")
    ):
        load_beir(folder)
    assert load_beir(folder, splits=["test"]).splits == ["test"]  # the other splits still load on their own


def test_unknown_dataset_name_lists_builtins(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError,
        match=r"no-such-set: not a built-in dataset \(wordnet, wordnet-demo, wordnet-mini, debian, debian-demo\) and not a folder",
    ):
        load_dataset("no-such-set")


def test_load_dataset_accepts_a_folder_path(tmp_path: Path) -> None:
    ds = load_dataset(str(make_beir(tmp_path / "mine")), splits=["train"])
    assert (ds.name, ds.splits) == ("mine", ["train"])


def test_builtin_registry_is_read_only() -> None:
    assert set(BUILTIN_DATASETS) == {"wordnet", "wordnet-demo", "wordnet-mini", "debian", "debian-demo"}
    with pytest.raises(TypeError):
        BUILTIN_DATASETS["mine"] = "x"  # type: ignore[index]


# ---------------------------------------------------------------- built-in data


def _assert_disjoint_and_consistent(ds: RetrievalDataset) -> None:
    docs = set(ds.corpus.ids)
    seen: set[str] = set()
    for split in ds.splits:
        qids = set(ds.qrels[split])
        assert not qids & seen, f"query ids shared between splits ({split})"
        seen |= qids
        assert set(ds.queries[split].ids) == qids
        for qid, judged in ds.qrels[split].items():
            assert judged == {qid[1:]: 1}  # the query's own synset, and only that
            assert qid[1:] in docs


@pytest.fixture(scope="module")
def wordnet() -> RetrievalDataset:
    return load_dataset("wordnet")


def test_builtin_wordnet(wordnet: RetrievalDataset) -> None:
    ds = wordnet
    assert ds.name == "wordnet"
    assert ds.path == DATA_DIR / "wordnet"
    assert 32_800 <= len(ds.corpus) <= 33_000
    assert {s: len(q) for s, q in ds.queries.items()} == {
        "dev": 1_000,
        "test": 2_000,
        "train": len(ds.corpus) - 3_000,
    }
    assert ds.corpus.ids == sorted(ds.corpus.ids)
    assert all(re.fullmatch(r"[nvasr]\d{8}", d) for d in ds.corpus.ids)
    _assert_disjoint_and_consistent(ds)
    assert (DATA_DIR / "wordnet" / "LICENSE").read_text().count(
        "WordNet 3.0 Copyright 2006 by Princeton University"
    ) == 1


def test_builtin_wordnet_demo_is_a_closed_subset_of_wordnet(wordnet: RetrievalDataset) -> None:
    demo = load_dataset("wordnet-demo")
    full = wordnet
    assert len(demo.corpus) == 10_000
    assert {s: len(q) for s, q in demo.queries.items()} == {"dev": 500, "test": 2_000, "train": 2_000}
    _assert_disjoint_and_consistent(demo)
    assert demo.qrels["test"] == full.qrels["test"]
    full_text = dict(zip(full.corpus.ids, full.corpus.texts))
    assert all(full_text[d] == t for d, t in zip(demo.corpus.ids, demo.corpus.texts))
    assert (DATA_DIR / "wordnet-demo" / "LICENSE").is_file()


def test_builtin_wordnet_mini_is_a_closed_subset_of_wordnet_demo() -> None:
    demo, mini = load_dataset("wordnet-demo"), load_dataset("wordnet-mini")
    assert len(mini.corpus) == 5_000
    assert {s: len(q) for s, q in mini.queries.items()} == {"dev": 500, "test": 1_000, "train": 1_000}
    _assert_disjoint_and_consistent(mini)
    demo_text = dict(zip(demo.corpus.ids, demo.corpus.texts))
    assert all(demo_text[d] == t for d, t in zip(mini.corpus.ids, mini.corpus.texts))
    assert mini.qrels["dev"] == demo.qrels["dev"]
    for split in ("test", "train"):
        assert mini.qrels[split].items() <= demo.qrels[split].items()
    assert (DATA_DIR / "wordnet-mini" / "LICENSE").is_file()


def test_builtin_document_format(wordnet: RetrievalDataset) -> None:
    text = dict(zip(wordnet.corpus.ids, wordnet.corpus.texts))
    # dog, domestic dog, Canis familiaris: lemmas keep their case, underscores become spaces.
    assert text["n02084071"].startswith("dog, domestic dog, Canis familiaris. the dog barked all night")


# ---------------------------------------------------------------- the builder

DATA_NOUN_SNIPPET = """\
  1 This software and database is being provided to you, the LICENSEE, by Princeton University
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04424418 n 0000 | that which is perceived or known or inferred to have its own distinct existence (living or nonliving)  
00003993 03 n 01 congener 0 001 @ 00003553 n 0000 | a whole (a thing or person) of the same kind or category as another; "lard was also used, though its congener, butter, was more frequently employed"; "the American shopkeeper differs from his European congener"  
02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 @ 02083346 n 0000 #m 02083863 n 0000 | a member of the genus Canis; "the dog barked all night"  
"""  # noqa: W291


def test_builder_parses_a_data_noun_snippet(tmp_path: Path) -> None:
    bw = load_builder()
    path = tmp_path / "data.noun"
    path.write_text(DATA_NOUN_SNIPPET)
    synsets = bw.parse_data_file(path)
    assert [s.doc_id for s in synsets] == ["n00001740", "n00003993", "n02084071"]
    entity, congener, dog = synsets
    assert entity.examples == ()  # no examples: the builder leaves it out of the task
    assert congener.query_id == "qn00003993"
    assert congener.query_text == "a whole (a thing or person) of the same kind or category as another"
    assert congener.doc_text == (
        "congener. lard was also used, though its congener, butter, was more frequently employed "
        "the American shopkeeper differs from his European congener"
    )
    assert dog.lemmas == ("dog", "domestic dog", "Canis familiaris")
    assert dog.doc_text == "dog, domestic dog, Canis familiaris. the dog barked all night"


def test_builder_parses_verb_frames_and_adjective_markers() -> None:
    bw = load_builder()
    verb = bw.parse_data_line(
        "00001740 29 v 02 breathe 0 take_a_breath 0 001 * 00005041 v 0000 02 + 02 00 + 08 00 | draw air into, "
        'and expel out of, the lungs; "I can breathe better when the air is clean"; "The patient is respiring"  \n'
    )
    assert (verb.doc_id, verb.lemmas) == ("v00001740", ("breathe", "take a breath"))
    assert verb.examples == ("I can breathe better when the air is clean", "The patient is respiring")
    adj = bw.parse_data_line(
        '00019731 00 s 02 handy 0 ready_to_hand(p) 0 001 & 00019131 a 0000 | easy to reach; "a handy spot"  \n'
    )
    assert (adj.doc_id, adj.lemmas, adj.definition) == (
        "s00019731",
        ("handy", "ready to hand"),
        "easy to reach",
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("00003993 03 n 01 congener 0 000 no gloss separator\n", r"data\.noun:7: not a WordNet data line"),
        ("0003993 03 n 01 congener 0 000 | x\n", r"data\.noun:7: bad synset offset '0003993'"),
        ("00003993 03 x 01 congener 0 000 | x\n", r"bad synset offset '00003993' or ss_type 'x'"),
        ("00003993 03 n zz congener 0 000 | x\n", r"data\.noun:7: bad word or pointer count"),
        ("00003993 03 n 01 congener 0 002 @ 00003553 n 0000 | x\n", r"1 words and 2 pointers do not match"),
    ],
)
def test_builder_rejects_malformed_data_lines(line: str, message: str) -> None:
    bw = load_builder()
    with pytest.raises(DatasetError, match=message):
        bw.parse_data_line(line, "data.noun:7")


@pytest.mark.parametrize(
    ("gloss", "definition", "examples"),
    [
        ('a dog; "it barked"; "it bit"  ', "a dog", ("it barked", "it bit")),
        ("no examples here  ", "no examples here", ()),
        ('assail from all sides: "The zebra was beset"', "assail from all sides", ("The zebra was beset",)),
        (
            'progress (especially in the phrase "make strides"); "big strides"',
            'progress (especially in the phrase "make strides")',
            ("big strides",),
        ),
        (
            'mercy; "the quality of mercy is not strained"--Shakespeare; "x y"',
            "mercy",
            ("the quality of mercy is not strained", "x y"),
        ),
        ('kinds; "a; b"; "c", "d" or "e"', "kinds", ("a; b", "c", "d", "e")),
        ('sloppy; "drop a hint"; drop names"', "sloppy", ("drop a hint", "drop names")),
        ('a branch where postal services are available"', "a branch where postal services are available", ()),
        ('okay; "do okay"; (`alright\' is nonstandard)', "okay", ("do okay",)),
    ],
)
def test_split_gloss(gloss: str, definition: str, examples: tuple) -> None:
    assert load_builder().split_gloss(gloss) == (definition, examples)


def test_builder_splits_are_seeded_and_disjoint() -> None:
    bw = load_builder()
    ids = [f"n{i:08d}" for i in range(100)]
    splits = bw.make_splits(list(reversed(ids)), test=20, dev=10)
    assert splits == bw.make_splits(ids, test=20, dev=10)  # depends on the id set only
    assert [len(splits[s]) for s in ("test", "dev", "train")] == [20, 10, 70]
    assert sorted(splits["test"] + splits["dev"] + splits["train"]) == ids
    with pytest.raises(DatasetError, match="only 100 usable synsets; need more than 100"):
        bw.make_splits(ids, test=60, dev=40)


@pytest.mark.slow  # rebuilds the three datasets from all 117k synsets (~3 s)
@pytest.mark.skipif(not (WORDNET_DIR / "data.noun").is_file(), reason="needs Debian's wordnet-base")
def test_builder_reproduces_the_shipped_files(tmp_path: Path) -> None:
    bw = load_builder()
    counts = bw.build(WORDNET_DIR, tmp_path, WORDNET_LICENSE)
    assert counts["wordnet-demo"] == {"corpus": 10_000, "test": 2_000, "dev": 500, "train": 2_000}
    assert counts["wordnet-mini"] == {"corpus": 5_000, "test": 1_000, "dev": 500, "train": 1_000}
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(built) == 3 * 7
    for rel in built:
        assert (tmp_path / rel).read_bytes() == (DATA_DIR / rel).read_bytes(), rel
