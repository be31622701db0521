"""Everything derived from an attention mask, in one place.

Conventions: ``attention_mask [B, S]`` with 1 = token, 0 = padding, padding on the left or on the
right (never in the middle: :func:`lrp_utils.checks.check_mask` refuses holes); boolean ``keep``
masks ``[B, 1, S, S]`` say whether query ``i`` may read key ``j`` (True = may read); a pass over
a subset of query positions (leave-one-out's suffix runs) uses ``[B, 1, Sq, S]``.
"""
from __future__ import annotations

import torch


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, S]`` position ids counted over the tokens only: 0 at the first token whichever side
    the padding is on (padding positions get 0 too; nothing reads them)."""
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of the last token (right or left padding)."""
    S = attention_mask.shape[1]
    return S - 1 - attention_mask.long().flip(1).argmax(1)


def first_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` index of the first token (0 with right padding; the [CLS] of a left-padded row)."""
    return attention_mask.long().argmax(1)


def left_padded(attention_mask: torch.Tensor) -> bool:
    """True if any row has padding before its first token."""
    return bool((first_positions(attention_mask) > 0).any())


def dense_keep(attention_mask: torch.Tensor, causal: bool, keep: torch.Tensor | None = None,
               queries: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean ``[B, 1, Sq, S]``: key padding, causality (query ``i`` reads keys ``j <= i``) and an
    optional extra ``keep [B, 1, Sq, S]`` (leave-one-out's removals), combined.  The query rows are
    the positions ``queries [B, Sq]`` (default every position, ``Sq = S``); the keys are always
    positions ``0 .. S-1`` of ``attention_mask [B, S]``."""
    B, S = attention_mask.shape
    m = attention_mask.bool()[:, None, None, :]
    if causal:
        pos = torch.arange(S, device=m.device)
        rows = pos[:, None] if queries is None else queries[:, None, :, None]
        m = m & (pos <= rows)
    m = m.expand(B, 1, S if queries is None else queries.shape[1], S)
    return m & keep if keep is not None else m


def padding_reads_itself(keep: torch.Tensor, attention_mask: torch.Tensor,
                         queries: torch.Tensor | None = None) -> torch.Tensor:
    """``keep [B, 1, Sq, S]`` where every padding query also reads itself, so that no row is empty
    (a causal padding query of a left-padded row reads nothing else, and a float32 softmax of an
    all-masked float64 row, as Hugging Face's eager attention takes it, is NaN, which the padding's
    values then spread to every token).  No token reads a padding key, so no token changes.
    ``queries [B, Sq]``: the query positions (default all, ``Sq = S``)."""
    S = attention_mask.shape[1]
    q = torch.arange(S, device=keep.device).expand(attention_mask.shape[0], S) if queries is None else queries
    padding = ~attention_mask.bool().gather(1, q)  # [B, Sq]
    own = (torch.arange(S, device=keep.device) == q[..., None]) & padding[..., None]  # [B, Sq, S]
    return keep | own[:, None]


def sliding_window(S: int, window: int | None, device=None, queries: torch.Tensor | None = None):
    """Boolean ``[S, S]`` (or ``[B, 1, Sq, S]`` for query positions ``queries [B, Sq]``): query ``i``
    may read key ``j`` only if ``i - j < window`` (None: no window).  By index in the (padded) row,
    as Hugging Face's ``sliding_window_overlay`` (``kv_idx > q_idx - window``); a row's tokens are
    contiguous, so padding does not move it."""
    if window is None:
        return None
    j = torch.arange(S, device=device)
    rows = j[:, None] if queries is None else queries[:, None, :, None]
    return (rows - j) < window


def additive(mask: torch.Tensor | None, dtype) -> torch.Tensor | None:
    """A boolean mask (True = may attend) as an additive one in ``dtype``: 0 where kept,
    ``finfo.min`` elsewhere (finite, so a query that may read nothing averages uniformly instead of
    giving NaN).  Float masks are taken as additive already and cast; ``None`` stays ``None``."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask.to(dtype)
