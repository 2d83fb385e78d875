"""Tiny offline fixtures for the export tests: a BEIR folder and a random 1-layer BERT sentence-transformers model.

Both are deterministic (seeded), built in a second or two, and need no hub: the model's word-level tokenizer
knows exactly the dataset's words, and its saved prompts ("find: " / "doc: ") check that an export keeps each
side's prompt.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [
    *("apple", "river", "stone", "cloud", "green", "quick", "lamp", "tiger", "piano", "salt", "window"),
    *("ocean", "forest", "copper", "violet", "bread", "candle", "dune", "ember", "frost", "glass", "honey"),
    *("iris", "jungle", "kettle"),
]
PROMPTS = {"query": "find: ", "document": "doc: "}


def build_beir(
    folder: Path, *, n_docs: int = 150, splits: dict[str, int] | None = None, seed: int = 0
) -> Path:
    """corpus.jsonl / queries.jsonl / qrels/<split>.tsv with graded (1-2) relevance, 2 documents per query."""
    splits = splits or {"train": 50, "dev": 15, "test": 25}
    rng = random.Random(seed)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    with open(folder / "corpus.jsonl", "w") as f:
        for i in range(n_docs):
            f.write(json.dumps({"_id": f"d{i:03d}", "title": rng.choice(WORDS), "text": text(3, 12)}) + "\n")
    qid = 0
    with open(folder / "queries.jsonl", "w") as fq:
        for split, n in splits.items():
            with open(folder / "qrels" / f"{split}.tsv", "w") as fr:
                fr.write("query-id\tcorpus-id\tscore\n")
                for _ in range(n):
                    fq.write(json.dumps({"_id": f"q{qid:03d}", "text": text(2, 6)}) + "\n")
                    for d in rng.sample(range(n_docs), 2):
                        fr.write(f"q{qid:03d}\td{d:03d}\t{rng.randint(1, 2)}\n")
                    qid += 1
    return folder


def build_tiny_st(folder: Path, *, hidden: int = 16, seed: int = 0) -> Path:
    """A random BERT (1 layer, ``hidden``-d) + mean pooling, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {t: i for i, t in enumerate([*specials, *WORDS, "find", "doc", ":"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    fast.model_max_length = 32
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=40,
    )
    hf = folder.with_name(folder.name + "-hf")
    BertModel(config).save_pretrained(hf)
    fast.save_pretrained(hf)
    model = SentenceTransformer(
        modules=[Transformer(str(hf), max_seq_length=32), Pooling(hidden, "mean")],
        device="cpu",
        prompts=PROMPTS,
    )
    model.save(str(folder), create_model_card=False)
    return folder
