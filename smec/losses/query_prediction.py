"""Search-Adaptor's prediction term (arXiv 2310.08750): a training-only query predictor that reads a relevant
document's adapted embedding and predicts its query; the formalisation is ours
(docs/methods.md#search-adaptor-where-the-paper-is-silent)."""

from __future__ import annotations

from torch import Tensor, nn

from smec.losses.reconstruction import reconstruction_loss
from smec.nn.decoder import Decoder

__all__ = ["QueryPredictionLoss"]


class QueryPredictionLoss(nn.Module):
    r"""L_pred = mean |p(ĉ(d_i)) − q_i| over the B (query, relevant document) pairs and the D coordinates.

    ĉ(d_i) = f(d_i) is the document's adapted embedding (the adaptor's output, with gradient), q_i the query's
    frozen embedding (detached: a fixed target, as L_rec's), and p the query predictor, a residual MLP of the
    adaptor's shape, p(z) = z + h(z), h = Linear(D→hidden) → ReLU → Linear(hidden→D) with the last layer
    zero-initialised: p starts as the identity, so at init L_pred = mean |f(d_i) − q_i|. p exists only for
    training (it is dropped at inference; :meth:`smec.systems.adaptors.SearchAdaptorModule.compress` never
    calls it). The distance is the mean absolute error of :func:`~smec.losses.reconstruction.reconstruction_loss`
    (the papers' regularisers are L1), so its weight keeps its meaning whatever B and D are.

    Args:
        dim: width D of the embeddings.
        hidden_dim: width of h's hidden layer (default None → D).

    Shapes:
        forward(adapted_documents (B, D), queries (B, D)) → scalar.
    """

    def __init__(self, dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.predictor = Decoder(
            dim,
            dim,
            hidden_dim=dim if hidden_dim is None else hidden_dim,
            norm="none",
            activation="relu",
            input_norm=False,
            residual=True,
        )

    def forward(self, adapted_documents: Tensor, queries: Tensor) -> Tensor:
        if adapted_documents.ndim != 2 or adapted_documents.shape != queries.shape:
            raise ValueError(
                "expected adapted documents and queries of the same shape (B, D), got "
                f"{tuple(adapted_documents.shape)} and {tuple(queries.shape)}"
            )
        return reconstruction_loss(self.predictor(adapted_documents), queries)
