"""`EmbeddingDataModule`: stream frozen embeddings from the store into training, without loading the store.

Training batches are read on the CPU straight from the stored shards into each batch's buffer (``preadv`` of
runs of rows, no memory map, so the resident set stays bounded whatever the store's size; see
:class:`datamodules.store.shards.RunReader`) in the stored dtype; the per-model L2 normalisation,
weighting and concatenation (:func:`datamodules.store.combine.combine_torch`) run in ``on_after_batch_transfer``,
i.e. on the accelerator, where they are nearly free.

Order: block-shuffled, rank-sharded rows (:class:`~datamodules.streams.rows.BlockShuffleStream`, whose docstring
holds the plan, DDP included) and (query, document) pairs (:class:`~datamodules.streams.pairs.PairStream`), served
by the resumable :class:`~datamodules.streams.loader.StreamLoader`. The order is a pure function of (seed, epoch,
world size, batch scope), so a resumed run replays the same epoch.

Batch formats (dicts; each value is a list of per-model tensors until ``on_after_batch_transfer`` combines
it into one float32 tensor):
    unsupervised: ``{"x": (B, D) float32}`` — corpus rows (and optionally train queries)
    supervised:   ``{"q": (B, D), "d": (B, D)}`` — (query, relevant document) pairs from train qrels; with
                  ``negatives`` also ``"n"`` (B, N, D), the query's mined hard negatives, and ``"n_mask"`` (B, N)
    both:         all of them; the pair stream cycles, the row stream sets the epoch length
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from datamodules import distributed
from datamodules.errors import InputError
from datamodules.negatives import MiningSpec, mine_hard_negatives
from datamodules.store.combine import NORMALIZATIONS, combine, combine_torch
from datamodules.store.reader import EmbeddingStore
from datamodules.streams.batch_scope import rank_batch_size
from datamodules.streams.loader import StreamLoader
from datamodules.streams.pairs import JointStream, PairStream
from datamodules.streams.rows import BlockShuffleStream, Segment

MODES = ("unsupervised", "supervised", "both")


def _mining_spec(values: Mapping[str, Any]) -> MiningSpec:
    """A :class:`MiningSpec` from a mapping (a checkpoint's plain hyper-parameters), unknown keys named."""
    known = [f.name for f in fields(MiningSpec)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"data.negatives: unknown key {unknown[0]!r} (expected one of {', '.join(known)})")
    return MiningSpec(**values)


@dataclass
class EvalData:
    """What the retrieval evaluator needs for one split: combined float32 inputs plus ids and qrels."""

    queries: np.ndarray
    corpus: np.ndarray
    query_ids: list[str]
    corpus_ids: list[str]
    qrels: dict[str, dict[str, int]]
    input_dim: int


class EmbeddingDataModule(L.LightningDataModule):
    """Batches of (concatenated) frozen embeddings from a store made by ``smec embed``.

    Args:
        store: the store folder.
        models: model keys to concatenate, in order (default: every model in the store, sorted).
        normalization: ``l2-concat-l2`` (paper: normalise each, concatenate, renormalise), ``l2-concat``, ``none``.
        model_weights: optional per-model weights applied after the per-model normalisation (not ``weights``:
            Lightning merges data and model hyper-parameters, and the losses' ``weights`` would clash).
        mode: ``unsupervised`` (rows), ``supervised`` (train query–document pairs) or ``both``.
        include_train_queries: unsupervised rows also include the train split's query embeddings.
        train_split / val_split / test_split: qrels splits for pairs, validation and test evaluation.
        batch_size: rows (or pairs) per optimizer step; under DDP see ``batch_scope``.
        batch_scope: what ``batch_size`` counts under DDP: ``global`` (default; each of the N processes gets
            ``batch_size / N`` rows, so a DDP fit takes the same optimizer steps per epoch, on batches of the same
            size, as one process, and the recipes' epoch budgets and LR schedules carry over; ``batch_size``
            must be a multiple of N) or ``rank`` (each process gets ``batch_size`` rows: N times more rows per
            step and N times fewer steps per epoch; retune lr and budgets). One process: no difference.
        block_rows / window_blocks: streaming granularity, see :class:`BlockShuffleStream`.
        run_rows: rows shuffled as one run inside a window (one read each). Default None: min(32,
            batch_size // 32), so that every batch mixes at least 32 places of its window. Longer runs take
            fewer system calls (experiments/bench/store_stream.py times 128-row runs: 18-26% more rows/s
            than the default on a 2-core machine) and put more neighbouring rows of the store in one batch; any
            other value changes every batch, so compare fits only at the same value.
        seed: data order seed (with the epoch).
        num_workers: DataLoader workers per rank (0 reads in the training process).
        val_rows: corpus rows streamed for the validation loss (the retrieval metrics use the whole split).
        read_ahead: with ``num_workers=0``, batches a background thread reads ahead of the training step (the
            reads release the GIL, so they overlap the step). Default: 2 when the trainer runs on an
            accelerator (the step mostly waits on the device), 0 on CPU (measured: with nothing to overlap, the
            thread hand-off costs ~8% of the read).
        negatives: hard negatives for the (query, document) pairs (``mode`` supervised or both): a
            :class:`datamodules.negatives.MiningSpec` (``{num_negatives: 8, relative_margin: 0.05, ...}`` in YAML;
            default None: in-batch negatives only). Mined once from the frozen concatenation of ``models``
            (``prepare_data``, cached under ``<store>/negatives/``); batches then carry ``"n"`` and ``"n_mask"``
            (see :class:`datamodules.streams.pairs.PairStream`).
        max_train_pairs: use only this many of the train split's (query, relevant document) pairs: a seeded
            subset (``train_pairs_seed``), the same for every ``seed``, so a label budget (e.g. 2,000 labels) is
            one fixed labelled set across methods and seeds. Default None: all pairs.
        train_pairs_seed: seed of that subset (default 0).
        verify: check each shard's sha256 against the store's manifest, and scan it for NaN/Inf, when it is
            first opened (see :class:`datamodules.store.reader.EmbeddingStore`); ``false`` skips the hash, for very
            large stores, and scans every batch for NaN/Inf instead. Default (``null``): on, unless
            ``SMEC_VERIFY_STORE=0``.
    """

    def __init__(
        self,
        store: str,
        models: list[str] | None = None,
        normalization: str = "l2-concat-l2",
        model_weights: list[float] | None = None,
        mode: str = "unsupervised",
        include_train_queries: bool = True,
        train_split: str = "train",
        val_split: str = "dev",
        test_split: str = "test",
        batch_size: int = 256,
        block_rows: int = 16384,
        window_blocks: int = 2,
        run_rows: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        val_rows: int = 4096,
        read_ahead: int | None = None,
        verify: bool | None = None,
        batch_scope: str = "global",
        negatives: MiningSpec | None = None,
        max_train_pairs: int | None = None,
        train_pairs_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if isinstance(negatives, Mapping):
            negatives = _mining_spec(negatives)
        if negatives is not None:
            # Plain values in the hyper-parameters: checkpoints load with torch.load(weights_only=True).
            self.hparams["negatives"] = asdict(negatives)
        if max_train_pairs is not None and (
            isinstance(max_train_pairs, bool) or not isinstance(max_train_pairs, int) or max_train_pairs < 1
        ):
            raise InputError(
                f"data.max_train_pairs: expected a positive integer or null, got {max_train_pairs!r}"
            )
        if mode not in MODES:
            raise InputError(f"data.mode: {mode!r} is not one of {', '.join(MODES)}")
        if normalization not in NORMALIZATIONS:
            raise InputError(
                f"data.normalization: {normalization!r} is not one of {', '.join(NORMALIZATIONS)}"
            )
        if batch_size < 1:
            raise InputError(f"data.batch_size: expected a positive integer, got {batch_size}")
        if run_rows is not None and (
            isinstance(run_rows, bool) or not isinstance(run_rows, int) or run_rows < 1
        ):
            raise InputError(f"data.run_rows: expected a positive integer or null, got {run_rows!r}")
        rank_batch_size(batch_size, 1, batch_scope)  # a bad scope name
        self.store_path = Path(store)
        self.models = models
        self.normalization = normalization
        self.model_weights = model_weights
        self.mode = mode
        self.include_train_queries = include_train_queries
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split
        self.batch_size = batch_size
        self.block_rows, self.window_blocks, self.run_rows = block_rows, window_blocks, run_rows
        self.seed = seed
        self.num_workers = num_workers
        self.val_rows = val_rows
        self.read_ahead = read_ahead
        self.verify = verify
        self.batch_scope = batch_scope
        self.negatives = negatives
        self.max_train_pairs = max_train_pairs
        self.train_pairs_seed = train_pairs_seed
        self._mined: np.ndarray | None = None
        self._store: EmbeddingStore | None = None
        self._eval_data: dict[str, EvalData] = {}

    # -- store access -----------------------------------------------------------------------------------
    @property
    def store(self) -> EmbeddingStore:
        if self._store is None:
            self._store = EmbeddingStore(self.store_path, verify=self.verify)
        return self._store

    @property
    def model_keys(self) -> list[str]:
        keys = list(self.models) if self.models else self.store.models
        for k in keys:
            self.store.model_dim(k)  # clear error for an unknown model
        if self.model_weights is not None and len(self.model_weights) != len(keys):
            raise InputError(
                f"data.model_weights has {len(self.model_weights)} entries for {len(keys)} models {keys}"
            )
        return keys

    @property
    def input_dim(self) -> int:
        """Width of the concatenated input; LightningCLI links it to the model's ``input_dim``."""
        return sum(self.store.model_dim(k) for k in self.model_keys)

    def _segment(self, text_set: str) -> Segment:
        return Segment(text_set, tuple(self.store.array(k, text_set) for k in self.model_keys))

    def _pairs(self, split: str) -> np.ndarray:
        text_set = f"queries/{split}"
        qpos = {q: i for i, q in enumerate(self.store.ids(text_set))}
        dpos = {d: i for i, d in enumerate(self.store.ids("corpus"))}
        pairs = [
            (qpos[q], dpos[d])
            for q, docs in self.store.qrels(split).items()
            for d, rel in docs.items()
            if rel > 0 and q in qpos and d in dpos
        ]
        if not pairs:
            raise InputError(f"{self.store_path}: split {split!r} has no (query, relevant document) pairs")
        found = np.asarray(pairs, dtype=np.int64)
        if split != self.train_split or self.max_train_pairs is None:
            return found
        if self.max_train_pairs > len(found):
            raise InputError(
                f"data.max_train_pairs={self.max_train_pairs}: split {split!r} of {self.store_path} has only "
                f"{len(found)} (query, relevant document) pairs"
            )
        keep = np.random.default_rng(self.train_pairs_seed).choice(
            len(found), self.max_train_pairs, replace=False
        )
        return found[np.sort(keep)]

    def prepare_data(self) -> None:
        """Mine the hard negatives (``negatives``) once, before any process reads them: Lightning runs this on
        one process per node, and every process's :meth:`setup` then loads the cache."""
        if self.negatives is not None and self.mode != "unsupervised":
            self._mine()

    def _mine(self) -> np.ndarray:
        if self._mined is None:
            mined = mine_hard_negatives(
                self.store,
                self.model_keys,
                self.train_split,
                self.negatives,
                normalization=self.normalization,
                model_weights=self.model_weights,
            )
            self._mined = mined.rows
        return self._mined

    def setup(self, stage: str) -> None:
        """Open (and, with verification on, check) every shard the stage reads, before any step runs: a corrupt
        or non-finite store fails here, naming the file, not after the first epoch's work. Under DDP every process
        also checks that ``data.batch_size`` splits over the ranks (see :meth:`check_world_size`)."""
        self.check_world_size(distributed.world_size())
        train = self.mode != "unsupervised" or self.include_train_queries
        needed = {
            "fit": [
                "corpus",
                *([f"queries/{self.train_split}"] if train else []),
                f"queries/{self.val_split}",
            ],
            "validate": ["corpus", f"queries/{self.val_split}"],
            "test": ["corpus", f"queries/{self.test_split}"],
            "predict": self.predict_text_sets,
        }.get(stage, [])
        for text_set in needed:
            if text_set in self.store.text_sets:
                self._segment(text_set)

    # -- loaders ------------------------------------------------------------------------------------------
    def check_world_size(self, world: int) -> None:
        """InputError when ``data.batch_size`` cannot be split over ``world`` processes (``batch_scope`` global).

        `smec fit` calls it before DDP starts its processes; :meth:`setup` calls it again in every process.
        """
        rank_batch_size(self.batch_size, world, self.batch_scope)

    def _row_stream(self, shuffle: bool = True, max_rows: int | None = None, train: bool = True):
        segments = [self._segment("corpus")]
        if train and self.include_train_queries and f"queries/{self.train_split}" in self.store.text_sets:
            segments.append(self._segment(f"queries/{self.train_split}"))
        return BlockShuffleStream(
            segments,
            self.batch_size,
            self.block_rows,
            self.window_blocks,
            run_rows=self.run_rows,
            shuffle=shuffle,
            seed=self.seed,
            drop_last=train,
            max_rows=max_rows,
            batch_scope=self.batch_scope,
        )

    def _pair_stream(self, cycle: bool) -> PairStream:
        queries = self._segment(f"queries/{self.train_split}").arrays
        corpus = self._segment("corpus").arrays
        pairs = self._pairs(self.train_split)
        negatives = self._mine() if self.negatives is not None else None
        return PairStream(
            queries, corpus, pairs, self.batch_size, self.seed, cycle, self.batch_scope, negatives=negatives
        )

    def _loader(self, dataset) -> StreamLoader:
        depth = self.read_ahead
        if depth is None:
            trainer = getattr(self, "trainer", None)
            depth = 2 if trainer is not None and trainer.strategy.root_device.type != "cpu" else 0
        return StreamLoader(
            dataset, batch_size=None, num_workers=self.num_workers, persistent_workers=False, read_ahead=depth
        )

    def train_dataloader(self) -> StreamLoader:
        if self.mode == "unsupervised":
            return self._loader(self._row_stream())
        if self.mode == "supervised":
            return self._loader(self._pair_stream(cycle=False))
        return self._loader(JointStream(self._row_stream(), self._pair_stream(cycle=True)))

    def val_dataloader(self) -> StreamLoader:
        return self._loader(self._row_stream(shuffle=False, max_rows=self.val_rows, train=False))

    def test_dataloader(self) -> StreamLoader:
        return self.val_dataloader()

    @property
    def predict_text_sets(self) -> list[str]:
        """Text sets written by ``smec predict``: the corpus and every query split, in store order."""
        return [ts for ts in self.store.text_sets if ts == "corpus"] + [
            ts for ts in self.store.text_sets if ts != "corpus"
        ]

    def predict_dataloader(self) -> list[StreamLoader]:
        loaders = []
        for text_set in self.predict_text_sets:
            stream = BlockShuffleStream(
                [self._segment(text_set)], self.batch_size, shuffle=False, drop_last=False
            )
            loaders.append(self._loader(stream))
        return loaders

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> dict[str, torch.Tensor]:
        """Combine per-model rows into the float32 input on the batch's device."""

        def comb(parts: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
            if isinstance(parts, torch.Tensor):  # a mask, not per-model rows
                return parts
            return combine_torch(parts, self.normalization, self.model_weights)

        return {key: comb(parts) for key, parts in batch.items()}

    # -- evaluation side ----------------------------------------------------------------------------------
    def eval_data(self, split: str | None = None) -> EvalData:
        """Combined corpus and queries of a split, in memory, for the retrieval evaluator.

        Loaded once per split and kept: the store is read-only, and the evaluator callback asks every validation
        epoch (returning the same object also lets it reuse its evaluator).
        """
        split = split or self.val_split
        if split not in self._eval_data:
            self._eval_data[split] = self._load_eval_data(split)
        return self._eval_data[split]

    def _load_eval_data(self, split: str) -> EvalData:
        keys = self.model_keys

        def load(text_set: str) -> np.ndarray:
            return combine(
                [self.store.array(k, text_set).read() for k in keys], self.normalization, self.model_weights
            )

        return EvalData(
            queries=load(f"queries/{split}"),
            corpus=load("corpus"),
            query_ids=self.store.ids(f"queries/{split}"),
            corpus_ids=self.store.ids("corpus"),
            qrels=self.store.qrels(split),
            input_dim=self.input_dim,
        )
