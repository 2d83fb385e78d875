"""ITQ binary codes (Gong & Lazebnik, iterative quantization): a learned rotation before taking signs.

``fit`` trains faiss's ``ITQTransform`` on the corpus sample: centre by the sample mean, optionally PCA to
``out_dim`` dims (faiss ``ITQ{out_dim}``), then ITQ's alternation between the sign codes and the orthogonal
rotation that best maps the centred vectors onto them (``max_iter`` rounds, random initial rotation from
``seed``). A vector's code is the sign of each rotated coordinate, packed 8 per byte: ``out_dim / 8`` bytes,
nothing else per vector — faiss's ``"ITQ,LSH"`` / ``"ITQ{d'},LSH"`` index stores the same bits (in another bit
order) in the same ``sa_code_size()``.

Scoring is symmetric: queries get the same transform and sign, and the corpus is ranked by Hamming distance
(``search_hamming``, exact tie rule); a row's score is ``1 - 2 * hamming / out_dim``, the cosine of the ±1 codes.
"""

from __future__ import annotations

import faiss
import numpy as np

from smec.evaluation.codes.base import Code
from smec.evaluation.errors import EvaluationError
from smec.evaluation.search import search_hamming


class ITQBinary(Code):
    """One bit per output dimension after centring, optional PCA and the ITQ rotation.

    Args:
        out_dim: number of bits (a multiple of 8, at most the input dim); None = the input dim (faiss
            ``"ITQ,LSH"``, no PCA); smaller = PCA to ``out_dim`` first (faiss ``"ITQ{out_dim},LSH"``).
        max_iter: ITQ alternations (default 10; faiss's 50 took 528 s at 768 bits on the busy 2-core machine,
            ~11 GFLOP per round, and did not rank better on the demo: nDCG@10 0.266 vs 0.263 at 768 bits, 0.240
            vs 0.251 at 384 bits; experiments/rivals_probe.py).
        max_train_per_dim: faiss subsamples the fit to ``max_train_per_dim * input_dim`` rows (faiss default
            10; deterministic).
        rescore, seed: see ``Code``.
    """

    family = "binary"
    symmetric = True

    def __init__(
        self,
        out_dim: int | None = None,
        *,
        max_iter: int = 10,
        max_train_per_dim: int = 10,
        rescore: int | None = None,
        seed: int = 0,
    ) -> None:
        if out_dim is not None and (out_dim < 8 or out_dim % 8):
            raise EvaluationError(
                f"itq: out_dim must be a positive multiple of 8 (bits per byte), got {out_dim}"
            )
        if max_iter < 1 or max_train_per_dim < 1:
            raise EvaluationError(
                f"itq: max_iter and max_train_per_dim must be >= 1, got {max_iter} and {max_train_per_dim}"
            )
        self.out_dim = out_dim
        self.max_iter = int(max_iter)
        self.max_train_per_dim = int(max_train_per_dim)
        super().__init__(rescore=rescore, seed=seed)

    @property
    def name(self) -> str:
        return "itq"

    def _bits(self, dim: int) -> int:
        return dim if self.out_dim is None else self.out_dim

    def bytes_for_dim(self, dim: int) -> int:
        return self._bits(dim) // 8

    def _scoring(self) -> str:
        return "itq-hamming"

    def _check_dim(self, dim: int) -> None:
        if self.out_dim is None and dim % 8:
            raise EvaluationError(f"itq: input dim must be a multiple of 8 without out_dim, got {dim}")
        if self.out_dim is not None and self.out_dim > dim:
            raise EvaluationError(f"itq: out_dim {self.out_dim} is larger than the input dim {dim}")

    def _fit(self, x: np.ndarray) -> None:
        bits = self._bits(x.shape[1])
        transform = faiss.ITQTransform(x.shape[1], bits, bits != x.shape[1])
        transform.itq.seed = self.seed
        transform.itq.max_iter = self.max_iter
        transform.max_train_per_dim = self.max_train_per_dim
        transform.train(x)
        self._transform = transform
        self._codes: np.ndarray | None = None

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return np.packbits(self._transform.apply(x) > 0, axis=1)

    def _add(self, x: np.ndarray) -> None:
        self._codes = self._encode(x)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist, idx = search_hamming(self._encode(queries), self._codes, k)
        bits = 8 * self._codes.shape[1]
        return 1.0 - 2.0 * dist.astype(np.float32) / bits, idx
