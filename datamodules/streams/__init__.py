"""How rows get from the store into training batches, without loading the store.

:mod:`~datamodules.streams.rows` (:class:`BlockShuffleStream`: block-shuffled, rank-sharded rows, the DDP plan),
:mod:`~datamodules.streams.pairs` (:class:`PairStream`: (query, relevant document) pairs; :class:`JointStream`),
:mod:`~datamodules.streams.batch_scope` (what ``data.batch_size`` counts under DDP),
:mod:`~datamodules.streams.loader` (:class:`StreamLoader`: the resumable DataLoader) and
:mod:`~datamodules.streams.read_ahead` (a background reader thread). :class:`datamodules.embedding.
EmbeddingDataModule` wires them. Import each name from its module.
"""
