"""How rows get from the store into training batches, without loading the store.

One concept per module, each name imported from its module (this package re-exports nothing):

- :mod:`~datamodules.streams.rows`: ``BlockShuffleStream``, block-shuffled and rank-sharded rows (the DDP plan);
- :mod:`~datamodules.streams.pairs`: ``PairStream``, (query, relevant document) pairs; ``JointStream``, both;
- :mod:`~datamodules.streams.batch_scope`: what ``data.batch_size`` counts under DDP;
- :mod:`~datamodules.streams.loader`: ``StreamLoader``, the DataLoader that resumes mid-epoch;
- :mod:`~datamodules.streams.read_ahead`: a background thread that reads batches ahead of the step.

:class:`datamodules.embedding.EmbeddingDataModule` wires them.
"""
