"""The on-disk embedding store: frozen embeddings computed once, read many times.

One concept per module, each name imported from its module (this package re-exports nothing):

- :mod:`~datamodules.store.layout`: the folder layout, model keys, the checks on ``store.json`` and manifests;
- :mod:`~datamodules.store.writer`: ``StoreWriter``, resumable, shard by atomic shard;
- :mod:`~datamodules.store.shards`: ``ShardedArray`` (one model's rows of one text set) and ``RunReader``;
- :mod:`~datamodules.store.reader`: ``EmbeddingStore``, a store opened read-only;
- :mod:`~datamodules.store.combine`: the concatenation recipe, numpy and torch;
- :mod:`~datamodules.store.verify`: sha256 + NaN/Inf checks, once per shard and process.
- :mod:`~datamodules.store.workers`: one store embedded by N workers (disjoint shards, partial manifests), merged.

Layout of a store folder::

    store.json                          format version, dataset name + fingerprint, models, text sets
    ids/<text set>.json                 row ids, shared by every model ("corpus", "queries/test", ...)
    qrels/<split>.json                  relevance judgements copied from the dataset
    <model key>/<text set>/manifest.json  model spec, dim, dtype, rows, per-shard sha256, format version
    <model key>/<text set>/shard-00000.npy  row-major .npy shards (float16 by default), memory-mappable

Writing is resumable: every shard is written to a temporary name, flushed and atomically renamed, so a
``kill -9`` at any moment leaves only complete shards; the manifest is written last. Rerunning the same job
skips finished shards and produces files byte-identical to an uninterrupted run (encoders are deterministic for
a given chunk, and chunk boundaries are fixed by ``shard_rows``). A text set without a manifest is incomplete
and is never opened for reading. The same files can be written by several workers at once, each its own shards,
then merged into a store byte-identical to one process's (:mod:`~datamodules.store.workers`).

Reading is read-only: :class:`~datamodules.store.reader.EmbeddingStore` validates manifests against the shard
files (shape, dtype, size) and yields either one model's rows or the concatenation of several models — each
L2-normalised, concatenated and renormalised (Ben Ayad et al.'s recipe, arXiv 2510.04626;
docs/methods.md#concat-decoder-mrl), see :func:`~datamodules.store.combine.combine`.

A corrupt or non-finite store never reaches a number. With verification on (the default), each shard's sha256
is compared with the manifest, and its values checked for NaN/Inf, when the shard is first opened in a process
(once per shard and process; 0.4-0.8 GiB/s on one core, see README); a shard that fails names
itself and says how to re-make it. For very large stores verification can be turned off
(``EmbeddingStore(..., verify=False)``, ``data.init_args.verify: false``, ``smec eval --no-verify``, or
``SMEC_VERIFY_STORE=0`` for every command); the rows are then checked for NaN/Inf as they are read, which costs
one pass over each batch instead of one hash of the whole store.

Every path built from a name that comes from data (model key, text set, split, shard file) goes through
:func:`datamodules.paths.safe_child`, so no name can lead outside the store folder.
"""
