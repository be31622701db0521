"""Leave-one-out that recomputes only what a removal changes (used by :mod:`lrp_utils.loo`).

Two savings, both exact (the same function summed in another order):

* **Causal prefix reuse** (decoders).  Removing position ``i`` at layer ``l`` changes nothing at
  positions before ``i``: they never read ``i``.  So blocks ``l+1 .. L`` run only on positions
  ``i .. e-1`` (``e``: one past the last token), and their attention reads the keys and values of
  positions ``< i`` from the unperturbed pass, recorded once per block (:class:`KVCache`).
* **Read-out only at the end** (decoders and encoders).  The last block needs the keys and values
  of every position but the output of the read-out position only: one pass over the positions
  computes the keys and values and stops at the attention; a second runs the block on the read-out
  position alone, attending to them.

Both work through :func:`lrp_utils.ops.key_values`, so every adapter whose attention goes through
:func:`lrp_utils.ops.softmax_attention` and which meets the conditions listed in
:mod:`lrp_utils.adapters.base` gets them; :func:`usable` says whether a model does.  Removals run
in chunks of similar suffixes (:func:`plan_chunks`) so that little is padded, and the rows of all
requested layers of a chunk run together (a row joins at the block after its layer), so each block
runs once per chunk on a large batch.  The last saving: with an LM head only the target's row of
its weight is used (:func:`target_logits`).

Shapes: hidden states ``[B, S, D]``; keys and values ``[B, Hkv, S, Dh]``; a chunk of ``n`` removal
rows ``(b, i)`` (example, removed position) runs positions ``s .. e-1`` (``Sq = e - s`` queries).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import masks, ops

#: fixed cost of a chunk in positions through a block (plan_chunks): one block call costs a few ms of
#: Python, worth 10-30 positions of a SmolLM2-sized block on one CPU core; fewer, larger chunks also
#: make more efficient matrix products
CHUNK_COST = 32


class _Stop(Exception):
    """Raised from a key/value function to end a pass once the keys and values are known."""

    def __init__(self, k, v):
        super().__init__("keys and values captured")
        self.k, self.v = k, v


@dataclass
class KVCache:
    """What each block's attention received in the unperturbed pass: ``modules[j]`` and the keys
    and values ``k[j], v[j] [B, Hkv, S, Dh]`` (after RoPE, before the grouped-query repeat)."""

    modules: list
    k: list
    v: list

    def prepend(self, j: int, rows: torch.Tensor, s: int):
        """Key/value function for block ``j`` of a pass over positions ``s ..`` of the rows ``rows
        [n]``: the recorded keys and values of positions ``< s`` go in front of the new ones."""
        def fn(module, k, v):
            if module is not self.modules[j]:
                raise RuntimeError(f"block {j} attended through another module than in the recorded pass")
            if s == 0:
                return k, v
            return torch.cat([self.k[j][rows, :, :s], k], 2), torch.cat([self.v[j][rows, :, :s], v], 2)
        return fn


def base_pass(adapter, h: torch.Tensor, ctx) -> tuple[list, KVCache | None]:
    """Blocks ``1 .. L`` on ``h [B, S, D]``: the ``L + 1`` residual streams and the keys and values
    of every block (None when some block does not make exactly one softmax-attention call)."""
    states, calls = [h], []
    for j in range(adapter.n_layers):
        seen = []

        def record(module, k, v, seen=seen):
            seen.append((module, k, v))
            return k, v

        with ops.key_values(record):
            h = adapter.block(j, h, ctx)
        states.append(h)
        calls.append(seen)
    if any(len(c) != 1 for c in calls):
        return states, None
    return states, KVCache(*map(list, zip(*(c[0] for c in calls))))


def usable(adapter, cache: KVCache | None) -> bool:
    """Whether the reuse applies to this model (see :mod:`lrp_utils.adapters.base`)."""
    return cache is not None and adapter.query_subsets and adapter.single_readout


def spans(adapter, attention_mask: torch.Tensor, b: torch.Tensor, i: torch.Tensor):
    """First and one-past-last position ``[n]`` that the removal rows ``(b, i)`` recompute: from
    ``i`` (decoders; 0 for encoders) to the last token of example ``b``."""
    end = masks.last_positions(attention_mask)[b] + 1
    return (i if adapter.causal else torch.zeros_like(i)), end


def plan_chunks(start: torch.Tensor, end: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split removal rows into chunks of at most ``batch_size`` rows: index tensors into
    ``start, end [P]``.  A chunk costs ``rows * (max end - min start)`` positions per block plus
    :data:`CHUNK_COST`; rows sorted by ``(end, start)`` are cut where the total is smallest
    (dynamic programme over cut points, ``O(P * batch_size)``)."""
    start, end = start.tolist(), end.tolist()  # one transfer, not one per row (GPU)
    order = sorted(range(len(start)), key=lambda p: (end[p], start[p]))
    s, e = [start[p] for p in order], [end[p] for p in order]
    best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for k in range(1, len(order) + 1):  # best split of the first k rows; the last chunk is j .. k-1
        lo, hi = s[k - 1], e[k - 1]
        for j in range(k - 1, max(-1, k - 1 - batch_size), -1):
            lo, hi = min(lo, s[j]), max(hi, e[j])
            cost = best[j] + (k - j) * (hi - lo) + CHUNK_COST
            if cost < best[k]:
                best[k], cut[k] = cost, j
    chunks, k = [], len(order)
    while k > 0:
        chunks.append(torch.tensor(order[cut[k]:k]))
        k = cut[k]
    return chunks[::-1]


def removal_keep(removed: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """``[n, 1, Sq, Sk]``: no query reads a removed key but the removed position itself.
    ``removed [n, Sk]`` bool, ``queries [n, Sq]`` positions of the query rows."""
    own = queries[:, :, None] == torch.arange(removed.shape[1], device=removed.device)
    return ((~removed[:, None, :]) | own)[:, None]


def removal_states(adapter, states: list, cache: KVCache, ctx, layers: list, b: torch.Tensor,
                   i: torch.Tensor, removal: str, max_rows: int, fill: dict | None = None) -> torch.Tensor:
    """Read-out states ``[len(layers), n, D]`` (output of block ``L`` at the read-out position)
    with position ``i[k]`` of example ``b[k]`` removed at each of ``layers`` (``removal`` "mask"
    or "zero", see :mod:`lrp_utils.loo`; or "mean": the state replaced by ``fill[layer] [D]``).  The rows of all layers run together, each joining at
    the block after its layer, so a block runs once per chunk on at most ``max(max_rows, n)``
    rows; positions ``s .. e-1`` only (:func:`spans`), the last block at the read-out only."""
    L = adapter.n_layers
    r = adapter.readout_positions(ctx.attention_mask)[b]
    out = {L: states[L][b, r]}  # nothing runs after layer L: the read-out state is untouched
    todo = sorted(set(layers) - {L})
    per_call = max(1, max_rows // len(b))
    for g in range(0, len(todo), per_call):
        group = todo[g:g + per_call]
        out.update(zip(group, _run_layers(adapter, states, cache, ctx, group, b, i, r, removal, fill)))
    return torch.stack([out[l] for l in layers])


class _Rows:
    """The per-row tensors of a chunk, repeated for the ``k`` layers whose rows are running
    (rows are stacked layer by layer): example ``b``, query positions, removal keep masks."""

    def __init__(self, adapter, ctx, b, i, r, removal):
        self.n, self.ctx, self.b, self.r = len(b), ctx, b, r
        start, end = spans(adapter, ctx.attention_mask, b, i)
        self.s, self.e = int(start.min()), int(end.max())
        self.queries = torch.arange(self.s, self.e, device=b.device).expand(self.n, -1)
        self.removed = torch.zeros(self.n, self.e, dtype=torch.bool, device=b.device)
        self.removed[torch.arange(self.n, device=b.device), i] = True
        self.mask = removal == "mask"
        self._cache = {}

    def repeated(self, k: int) -> tuple:
        """``(b, ctx, keep, ctx at the read-out, keep at the read-out)`` for ``k * n`` rows."""
        if k not in self._cache:
            b, q, r, removed = self.b.repeat(k), self.queries.repeat(k, 1), self.r.repeat(k), self.removed.repeat(k, 1)
            keep = (removal_keep(removed, q), removal_keep(removed, r[:, None])) if self.mask else (None, None)
            self._cache[k] = (b, self.ctx.at(b, q, self.e), keep[0], self.ctx.at(b, r[:, None], self.e), keep[1])
        return self._cache[k]


def _run_layers(adapter, states, cache, ctx, layers, b, i, r, removal, fill=None) -> torch.Tensor:
    """:func:`removal_states` for sorted ``layers`` below ``L``: ``[len(layers), n, D]``."""
    L, rows = adapter.n_layers, _Rows(adapter, ctx, b, i, r, removal)
    s, e, n = rows.s, rows.e, rows.n
    h = states[0].new_zeros(0, e - s, states[0].shape[-1])
    for j in range(layers[0], L):
        if j in layers:  # the removal rows of layer j join before block j + 1
            x = states[j][b, s:e]
            if removal == "zero":
                x = x.masked_fill(rows.removed[:, s:, None], 0.0)
            elif removal == "mean":
                x = torch.where(rows.removed[:, s:, None], fill[j].to(x), x)
            h = torch.cat([h, x])
        bk, sub, keep, sub_r, keep_r = rows.repeated(len(h) // n)
        if j < L - 1:
            with ops.key_values(cache.prepend(j, bk, s)):
                h = adapter.block(j, h, sub, keep=keep)
    k, v = _keys_values(adapter, L - 1, h, sub, keep, cache.prepend(L - 1, bk, s))
    h = h[torch.arange(len(h), device=h.device), r.repeat(len(h) // n) - s][:, None]
    with ops.key_values(lambda module, _k, _v: (k, v)):
        h = adapter.block(L - 1, h, sub_r, keep=keep_r)
    return h[:, 0].view(len(layers), n, -1)


def target_logits(adapter, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Logits ``[n]`` of ``target [n]`` from the read-out states ``h [n, D]``.  When the adapter
    names its final linear map (``adapter.head``, e.g. a language-model head of 50k rows), only the
    targets' rows of it are used: ``head_input . W[target] + b[target]``, then whatever the read-out
    does after the head (:meth:`~lrp_utils.adapters.base.Adapter.head_output`)."""
    head = getattr(adapter, "head", None)
    if not isinstance(head, torch.nn.Linear):
        return adapter.readout_at(h).gather(1, target[:, None])[:, 0]
    x = _head_input(adapter, head, h)
    logit = (x[:, None, :] @ head.weight[target][:, :, None])[:, 0, 0]
    if head.bias is not None:
        logit = logit + head.bias[target]
    return adapter.head_output(logit)


def _head_input(adapter, head, h: torch.Tensor) -> torch.Tensor:
    """What ``head`` receives when the read-out runs on ``h [n, D]`` (the read-out stops there)."""
    def stop(module, args):
        raise _Stop(args[0], None)

    handle = head.register_forward_pre_hook(stop)
    try:
        adapter.readout_at(h)
    except _Stop as got:
        return got.k
    finally:
        handle.remove()
    raise RuntimeError("the read-out did not call adapter.head")


def _keys_values(adapter, j: int, h, ctx, keep, prepend):
    """Keys and values ``[n, Hkv, Sk, Dh]`` that block ``j``'s attention would attend to on ``h``
    (the pass stops there)."""
    def stop(module, k, v):
        raise _Stop(*prepend(module, k, v))

    try:
        with ops.key_values(stop):
            adapter.block(j, h, ctx, keep=keep)
    except _Stop as got:
        return got.k, got.v
    raise RuntimeError(f"block {j} made no softmax-attention call")
