"""The corpus-fitted quantiser of an exported int8 / int4 / binary model, as a sentence-transformers module.

It applies what `smec eval` applies to a compressed vector: L2 normalisation, then the quantiser fitted on the
evaluator's calibration sample of the corpus (:mod:`smec.evaluation.calibration`), with the evaluator's own
classes (:mod:`smec.evaluation.quantize`), so the codes are the evaluator's codes.

Output codes (``uint8``):

- ``int8``: (B, dim), one code per dimension; ``int4``: (B, ceil(dim / 2)), two 4-bit codes per byte (faiss's
  ``QT_4bit`` layout); both decode to ``vmin + (code + 0.5) * step`` per dimension (the stored ranges);
- ``binary``: (B, dim / 8), ``x > threshold`` packed MSB-first (``numpy.packbits``), thresholds = the
  corpus-sample medians (or 0 with ``threshold="sign"``).

:meth:`Quantizer.similarity` scores codes as `smec eval` does: int codes are decoded, renormalised and compared
by inner product (the evaluator's symmetric "deq" cosine); binary codes by ``1 - 2 * hamming / dim`` (the
cosine of the ±1 codes). A plain ``SentenceTransformer.similarity`` on the codes is *not* this.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from sentence_transformers.base.modules import Module

from smec.evaluation.quantize import BITS_PER_DIM, BinaryQuantizer, ScalarQuantizer, l2_normalize

PARAMS_FILE = "quantizer.safetensors"
INT_PRECISIONS = ("int8", "int4")


def restore_scalar_quantizer(bits: int, trained: np.ndarray) -> ScalarQuantizer:
    """A :class:`ScalarQuantizer` whose faiss state is ``trained`` (``[vmin | vmax - vmin]``, 2 x dim floats).

    faiss encodes from that vector alone, so a restored quantiser gives the codes of the one that was fitted.
    """
    import faiss

    trained = np.ascontiguousarray(trained, dtype=np.float32).reshape(-1)
    d = trained.size // 2
    sq = ScalarQuantizer(bits)
    qtype = faiss.ScalarQuantizer.QT_8bit if bits == 8 else faiss.ScalarQuantizer.QT_4bit
    fq = faiss.ScalarQuantizer(d, qtype)
    fq.rangestat = faiss.ScalarQuantizer.RS_minmax
    faiss.copy_array_to_vector(trained, fq.trained)
    # ScalarQuantizer has no public constructor from a fitted state; these are the attributes its fit() sets.
    sq._sq = fq
    sq.vmin = trained[:d].copy()
    sq.step = trained[d:].copy() / (2**bits - 1)
    sq.code_size = int(fq.code_size)
    return sq


def fitted_state(quantizer: ScalarQuantizer | BinaryQuantizer) -> dict[str, np.ndarray]:
    """What :class:`Quantizer` stores of a fitted quantiser."""
    import faiss

    if isinstance(quantizer, ScalarQuantizer):
        return {"trained": faiss.vector_to_array(quantizer._fitted().trained).astype(np.float32)}
    if quantizer.thresholds is None:
        raise ValueError("BinaryQuantizer is not fitted")
    return {"thresholds": np.asarray(quantizer.thresholds, dtype=np.float32)}


class Quantizer(Module):
    """``features["sentence_embedding"]`` (B, dim) float -> uint8 codes (see the module docstring).

    Args:
        precision: ``int8``, ``int4`` or ``binary``.
        dim: the width of the vectors it encodes.
        quantizer: the fitted :class:`ScalarQuantizer` / :class:`BinaryQuantizer`.
        threshold: binary only, ``median`` or ``sign`` (recorded; the thresholds are in ``quantizer``).
        fit_sample / seed: the calibration sample it was fitted on (recorded).
    """

    config_file_name = "smec_quantizer.json"
    config_keys: ClassVar[list[str]] = ["precision", "dim", "threshold", "fit_sample", "seed"]

    def __init__(
        self,
        precision: str,
        dim: int,
        quantizer: ScalarQuantizer | BinaryQuantizer,
        threshold: str | None = None,
        fit_sample: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if precision not in (*INT_PRECISIONS, "binary"):
            raise ValueError(f"precision must be one of int8, int4, binary, got {precision!r}")
        self.precision = precision
        self.dim = int(dim)
        self.quantizer = quantizer
        self.threshold = threshold
        self.fit_sample = fit_sample
        self.seed = int(seed)

    @property
    def bits(self) -> int:
        return BITS_PER_DIM[self.precision] * self.dim

    def get_embedding_dimension(self) -> int:
        """Width of the code arrays (bytes per vector)."""
        return -(-self.bits // 8)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) float -> (n, code bytes) uint8: normalise, then quantise (the evaluator's path)."""
        return self.quantizer.encode(l2_normalize(x))

    def decode(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """Codes -> the float32 vectors `smec eval` scores: renormalised reconstructions, or ±1 for binary."""
        codes = np.ascontiguousarray(_numpy(codes), dtype=np.uint8)
        if codes.ndim == 1:
            codes = codes[None]
        if self.precision == "binary":
            return BinaryQuantizer.unpack_signs(codes)
        return l2_normalize(self.quantizer.decode(codes))

    def similarity(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(n, m) scores of codes ``a`` against codes ``b``, as `smec eval` scores them."""
        da, db = torch.from_numpy(self.decode(a)), torch.from_numpy(self.decode(b))
        scores = da @ db.T
        return scores / self.dim if self.precision == "binary" else scores

    def similarity_pairwise(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        da, db = torch.from_numpy(self.decode(a)), torch.from_numpy(self.decode(b))
        scores = (da * db).sum(dim=-1)
        return scores / self.dim if self.precision == "binary" else scores

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        x = features["sentence_embedding"]
        codes = self.encode(x.detach().float().cpu().numpy())
        features["sentence_embedding"] = torch.from_numpy(codes).to(x.device)
        return features

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        self.save_config(output_path)
        save_file(fitted_state(self.quantizer), os.path.join(output_path, PARAMS_FILE))

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
    ) -> Quantizer:
        hub = dict(
            token=token, cache_folder=cache_folder, revision=revision, local_files_only=local_files_only
        )
        config = cls.load_config(model_name_or_path, subfolder=subfolder, **hub)
        path = cls.load_file_path(model_name_or_path, PARAMS_FILE, subfolder=subfolder, **hub)
        if path is None:
            raise FileNotFoundError(f"{os.path.join(model_name_or_path, subfolder, PARAMS_FILE)}: missing")
        state = load_file(path)
        if config["precision"] == "binary":
            quantizer: ScalarQuantizer | BinaryQuantizer = BinaryQuantizer(
                config.get("threshold") or "median"
            )
            quantizer.thresholds = state["thresholds"].astype(np.float32)
        else:
            quantizer = restore_scalar_quantizer(8 if config["precision"] == "int8" else 4, state["trained"])
        return cls(quantizer=quantizer, **config)


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
