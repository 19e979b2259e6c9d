"""The answer tokens: one dedicated token for every value an answer slot can take.

A score slot must be exactly one token in any tokenizer, but Qwen2's pre-tokenizer splits
digits one by one ("10" is two tokens) and other tokenizers merge digits with spaces. So the
answer uses tokens of its own, added to the tokenizer as special tokens (never split, never
merged with their neighbours):

- ``<|s0|>`` ... ``<|s10|>``: score 0-10 (a phone score uses ``<|s0|>``-``<|s2|>``);
- ``<|na|>``: a score not estimated (``None``), written only when rendering;
- ``<|ok|>``: the phone was said as the canonical one;
- ``<|del|>``: the phone was deleted;
- ``<|ph:AA|>`` ... ``<|ph:ZH|>``: another phone was said (39 ARPAbet phones, no stress);
- ``<|ph:unk|>``: an unclear phone: upstream ``<unk>`` and rater marks such as ``R*``;
- ``<|slot|>``: the one-pass placeholder at every slot.

Each token's embedding starts as the mean embedding of its :data:`NATURAL_TEXT`: ``0`` ...
``10``, ``none``, ``same``, ``deleted``, the phone's name, ``unknown``, ``?``.

>>> len(ANSWER_TOKENS), ANSWER_TOKENS[:3], ANSWER_TOKENS[-1]
(55, ('<|s0|>', '<|s1|>', '<|s2|>'), '<|slot|>')
>>> score_token(10), score_of("<|s10|>"), score_of("<|na|>")
('<|s10|>', 10, None)
>>> phone_token("AO0"), phone_token("<unk>"), phone_token("R*")
('<|ph:AO|>', '<|ph:unk|>', '<|ph:unk|>')
>>> phone_of("<|ph:AO|>"), phone_of("<|ph:unk|>")
('AO', '<unk>')

The mapping of pronounced phones is lossy in two ways: stress digits are dropped (``AO0`` ->
``<|ph:AO|>`` -> ``AO``) and every rater mark that is not an ARPAbet phone becomes
``<|ph:unk|>`` -> ``<unk>``.

:func:`add_answer_tokens` adds the tokens to a tokenizer (and rows to a model's embeddings,
initialised from each token's natural text so that a zero-shot model reads ``<|s7|>`` much
as it reads ``7``); :func:`check_single_tokens` proves each encodes to exactly one id.
Because they are special tokens, decode answers with ``skip_special_tokens=False`` (or read
the ids directly): ``skip_special_tokens=True`` removes the answer's values.
"""

from __future__ import annotations

from typing import Any

from apa.phones import PHONES  # the 39 ARPAbet phones of CMUdict, without stress digits
from apa.text import strip_stress

MAX_SCORE = 10
SCORE_TOKENS: tuple[str, ...] = tuple(f"<|s{k}|>" for k in range(MAX_SCORE + 1))
"""``<|s0|>`` ... ``<|s10|>``: index ``k`` is score ``k``."""
NA = "<|na|>"
OK = "<|ok|>"
DELETED = "<|del|>"
UNKNOWN_PHONE = "<|ph:unk|>"
SLOT = "<|slot|>"
UNKNOWN = "<unk>"
"""The pronounced phone that :data:`UNKNOWN_PHONE` stands for (the upstream mark)."""

PHONE_TOKENS: tuple[str, ...] = tuple(f"<|ph:{p}|>" for p in PHONES)
PRONOUNCED_TOKENS: tuple[str, ...] = (OK, DELETED, *PHONE_TOKENS, UNKNOWN_PHONE)
"""The values of a pronounced-phone slot, in the order of its probability vectors."""

ANSWER_TOKENS: tuple[str, ...] = (
    *SCORE_TOKENS,
    NA,
    OK,
    DELETED,
    *PHONE_TOKENS,
    UNKNOWN_PHONE,
    SLOT,
)
"""Every answer token, in the order :func:`add_answer_tokens` adds them."""

NATURAL_TEXT: dict[str, str] = {
    **{token: str(k) for k, token in enumerate(SCORE_TOKENS)},
    NA: "none",
    OK: "same",
    DELETED: "deleted",
    **{token: p for token, p in zip(PHONE_TOKENS, PHONES, strict=True)},
    UNKNOWN_PHONE: "unknown",
    SLOT: "?",
}
"""The plain text whose mean embedding initialises each answer token's embedding."""

_SCORE_OF = {token: k for k, token in enumerate(SCORE_TOKENS)}
_PHONE_OF = {
    **{token: p for token, p in zip(PHONE_TOKENS, PHONES, strict=True)},
    UNKNOWN_PHONE: UNKNOWN,
}
_TOKEN_OF_PHONE = {p: token for token, p in _PHONE_OF.items()}


def score_token(k: int) -> str:
    """The token of integer score ``k`` (0-10).

    >>> score_token(0)
    '<|s0|>'
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_SCORE:
        raise ValueError(f"a score token holds an integer 0-{MAX_SCORE}, not {k!r}")
    return SCORE_TOKENS[k]


def score_of(token: str) -> int | None:
    """The integer score of a score token; ``None`` for :data:`NA`. Raises ``KeyError`` for
    any other string."""
    if token == NA:
        return None
    return _SCORE_OF[token]


def phone_token(phone: str) -> str:
    """The pronounced-phone token of ``phone``: stress dropped; anything that is not one of
    the 39 ARPAbet phones (``<unk>``, rater marks like ``R*``) is :data:`UNKNOWN_PHONE`."""
    return _TOKEN_OF_PHONE.get(strip_stress(phone), UNKNOWN_PHONE)


def phone_of(token: str) -> str:
    """The pronounced phone a ``<|ph:...|>`` token stands for (``<unk>`` for
    :data:`UNKNOWN_PHONE`). Raises ``KeyError`` for any other string."""
    return _PHONE_OF[token]


def check_single_tokens(tokenizer: Any) -> dict[str, int]:
    """Each answer token's id, after checking that it encodes to exactly one id, alone and
    between text, and that no two share an id. Raises ``ValueError`` naming the offenders
    (tokens missing from the tokenizer split into several ids)."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ANSWER_TOKENS}
    bad = []
    for token, token_id in ids.items():
        alone = tokenizer.encode(token, add_special_tokens=False)
        between = tokenizer.encode(f"a {token}b", add_special_tokens=False)
        if (
            alone != [token_id]
            or between.count(token_id) != 1
            or token_id == tokenizer.unk_token_id
        ):
            bad.append(f"{token} -> {alone}")
    if bad:
        raise ValueError(
            f"{len(bad)} answer tokens are not single tokens of this tokenizer "
            f"(call apa.lmm.vocab.add_answer_tokens first): {', '.join(bad[:8])}"
            + (" ..." if len(bad) > 8 else "")
        )
    if len(set(ids.values())) != len(ids):
        raise ValueError("answer tokens share ids")
    return ids


def add_answer_tokens(tokenizer: Any, model: Any = None) -> dict[str, int]:
    """Add the answer tokens the tokenizer lacks, as special tokens; return every answer
    token's id.

    With a ``model``, its input and output embeddings grow (never shrink: Qwen2's table is
    padded past the tokenizer) to hold every id, and the rows of the tokens added now, or
    created now by the growth, are set to the mean embedding of the token's
    :data:`NATURAL_TEXT` (the output row too when the head is not tied). Idempotent: a second
    call adds and changes nothing. A tokenizer saved with the tokens and a fresh base model
    leave the rows as the base model has them: add the tokens to the base tokenizer instead.
    """
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [token for token in ANSWER_TOKENS if token not in vocab]
    if missing:
        tokenizer.add_tokens(
            [
                AddedToken(token, special=True, normalized=False, lstrip=False, rstrip=False)
                for token in missing
            ],
            special_tokens=True,
        )
    ids = check_single_tokens(tokenizer)
    if model is not None:
        _fit_embeddings(tokenizer, model, ids, set(missing))
    return ids


def _fit_embeddings(tokenizer: Any, model: Any, ids: dict[str, int], added: set[str]) -> None:
    import torch

    old_rows = model.get_input_embeddings().weight.shape[0]
    needed = max(len(tokenizer), max(ids.values()) + 1)
    if needed > old_rows:
        model.resize_token_embeddings(needed, mean_resizing=False)
    fresh = [t for t in ANSWER_TOKENS if t in added or ids[t] >= old_rows]
    if not fresh:
        return
    inputs = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    untied = head is not None and head.weight.data_ptr() != inputs.data_ptr()
    with torch.no_grad():
        for token in fresh:
            natural = tokenizer.encode(NATURAL_TEXT[token], add_special_tokens=False)
            if not natural or max(natural) >= old_rows:
                raise ValueError(f"natural text of {token} gives ids {natural} outside the model")
            rows = torch.tensor(natural)
            inputs[ids[token]] = inputs[rows].float().mean(0).to(inputs.dtype)
            if untied:
                head.weight[ids[token]] = head.weight[rows].float().mean(0).to(head.weight.dtype)
                if getattr(head, "bias", None) is not None:
                    head.bias[ids[token]] = head.bias[rows].float().mean().to(head.bias.dtype)
