"""Query and document prompts: explicit argument > prompts saved with the model > a known family's default."""

from __future__ import annotations

import re
from collections.abc import Mapping

# Default (query prompt, document prompt) per model family, matched against the lower-cased model name.
# Explicit arguments and prompts saved with the model take precedence.
_FAMILY_PROMPTS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    # intfloat/e5-*-v2, multilingual-e5-*: the instruct variants take task instructions instead.
    (re.compile(r"(^|[/_-])(multilingual-)?e5-(?!.*(instruct|mistral))"), "query: ", "passage: "),
    # BAAI/bge-*-en(-v1.5): the retrieval instruction goes on queries only.
    (
        re.compile(r"(^|/)bge-(small|base|large)-en"),
        "Represent this sentence for searching relevant passages: ",
        "",
    ),
)


def resolve_prompts(
    name: str,
    saved: Mapping[str, str] | None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
) -> tuple[str, str]:
    """The (query, document) prompts for model ``name``.

    Each side takes the first of: the explicit argument (``""`` included: it means no prompt), a non-empty
    prompt saved with the model (``saved``, sentence-transformers' ``prompts``: ``query``; ``document``,
    ``passage`` or ``corpus``), the default of a known family (e5: ``"query: "`` / ``"passage: "``), ``""``.
    Saved empty prompts are skipped because sentence-transformers fills in ``{"query": "", "document": ""}``
    for every model.
    """
    saved = {k: v for k, v in (saved or {}).items() if isinstance(v, str) and v}
    family_q, family_d = "", ""
    lowered = name.lower()
    for pattern, query, document in _FAMILY_PROMPTS:
        if pattern.search(lowered):
            family_q, family_d = query, document
            break
    if query_prompt is None:
        query_prompt = saved.get("query", family_q)
    if document_prompt is None:
        document_prompt = saved.get("document", saved.get("passage", saved.get("corpus", family_d)))
    return query_prompt, document_prompt
