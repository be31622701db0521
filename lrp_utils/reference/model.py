"""The reference LRP of a whole :class:`~lrp_utils.models.TinyTransformer`: forward records and
the backward pass block by block (see :mod:`lrp_utils.reference` for the rules it applies)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import masks
from ..methods import Method, get_method
from .rules import (_core, _div, _lin, _mlp_forward, _norm_parts, _rope_tables, _rope_terms, linear_lrp,
                    mlp_lrp, norm_lrp, rope_lrp, split_sum)

#: kinds of absorbed relevance: linear/LN biases, softmax Taylor bias terms, the dropped position share
#: of non-PA methods, non-conservative shares of ablations, the std gradient of a norm under GI
KINDS = ("bias", "softmax", "positions", "shares", "norm")
SUPPORTED = ("cp-lrp", "cp-lrp-ah", "pa-cp-lrp", "attnlrp", "pa-lrp", "attnlrp-no-softmax",
             "attnlrp-full-value")


@dataclass
class ReferenceResult:
    """Same conventions as :class:`~lrp_utils.Explanation` (``layers[0]`` = input of block 1), plus
    ``absorbed`` (kind -> ``[B]``, see :data:`KINDS`) and, for rotary models, ``rotated_qk``:
    per layer ``[B, S]`` relevance at the rotated q and k (heads, features and both sides summed)."""

    tokens: torch.Tensor
    positions: torch.Tensor | None
    positions_by_layer: list | None
    layers: list
    logit: torch.Tensor
    target: torch.Tensor
    absorbed: dict
    rotated_qk: list | None = None
    method: str = ""

    @property
    def total(self) -> torch.Tensor:
        """``[B]``: token (+ position) relevance."""
        return self.tokens.sum(-1) + (self.positions.sum(-1) if self.positions is not None else 0)

    def budget(self) -> torch.Tensor:
        """``[B]``: ``total + sum(absorbed)``; equals ``logit`` exactly (float64 rounding)."""
        return self.total + sum(self.absorbed.values())


@dataclass
class _Ctx:
    """What every rule needs: the method, masks, rotary tables and the absorption ledger."""

    m: Method
    cfg: object
    keep: torch.Tensor  # [B, 1, S, S] bool: query i may read key j (padding + causality)
    key_keep: torch.Tensor  # [B, S] bool
    rope: tuple | None = None  # (cos, sin) [B, S, head_dim]
    pa_rope: bool = False
    absorbed: dict = field(default_factory=dict)
    rope_pos: dict = field(default_factory=dict)  # layer -> [B, S]
    rotated: dict = field(default_factory=dict)  # layer -> [B, S]
    layer: int = 0

    def absorb(self, kind: str, r: torch.Tensor):
        """Add ``r`` (summed over all but the batch axis) to the ``kind`` account."""
        self.absorbed[kind] = self.absorbed[kind] + r.reshape(r.shape[0], -1).sum(1)


# -- attention block ------------------------------------------------------------------------------
def _attention_forward(att, x, ctx):
    B, S, _ = x.shape
    hd = ctx.cfg.head_dim
    q, k, v = (_lin(x, lin).view(B, S, -1, hd).transpose(1, 2) for lin in (att.q, att.k, att.v))
    qr, kr = (sum(_rope_terms(t, ctx)) for t in (q, k)) if ctx.rope is not None else (q, k)
    rep = lambda t: t.repeat_interleave(att.n_rep, dim=1)  # noqa: E731
    core = _core(ctx)[0](qr, rep(kr), rep(v), ctx)
    o_in = core["out"].transpose(1, 2).reshape(B, S, -1)
    return {"x": x, "q": q, "k": k, "v": v, "qr": qr, "kr": kr, "core": core, "o_in": o_in,
            "y": _lin(o_in, att.o)}


def attention_lrp(att, r, R_y, ctx):
    """Output projection (linear), attention core, GQA head repeats (relevance of the copies summed),
    RoPE, head split and q/k/v projections (linear; the input's relevance sums the three paths)."""
    B, S, _ = r["x"].shape
    R_out = linear_lrp(r["o_in"], att.o, R_y, ctx).view(B, S, -1, ctx.cfg.head_dim).transpose(1, 2)
    R_qr, R_kr, R_v = _core(ctx)[1](r["core"], R_out, ctx)
    unrep = lambda t: t.view(B, -1, att.n_rep, *t.shape[2:]).sum(2)  # noqa: E731
    R_q, R_k, R_v = R_qr, unrep(R_kr), unrep(R_v)
    if ctx.rope is not None:
        ctx.rotated[ctx.layer] = R_q.sum((1, 3)) + R_k.sum((1, 3))
        (R_q, pq), (R_k, pk) = rope_lrp(r["q"], R_q, ctx), rope_lrp(r["k"], R_k, ctx)
        if ctx.pa_rope:
            ctx.rope_pos[ctx.layer] = pq + pk
    merge = lambda t: t.transpose(1, 2).reshape(B, S, -1)  # noqa: E731
    paths = ((att.q, R_q), (att.k, R_k), (att.v, R_v))
    return sum(linear_lrp(r["x"], lin, merge(R), ctx) for lin, R in paths)


# -- blocks, embedding, read-out ------------------------------------------------------------------
def _block_forward(blk, h, ctx):
    att = _attention_forward(blk.attn, _norm_parts(blk.norm1, h)[0], ctx)
    mid = h + att["y"]
    r = {"h": h, "att": att, "mid": mid, "out": mid}
    if blk.mlp is not None:
        r["mlp"] = _mlp_forward(blk.mlp, _norm_parts(blk.norm2, mid)[0])
        r["out"] = mid + r["mlp"]["y"]
    return r


def block_lrp(blk, r, R_out, ctx):
    """Pre-norm block ``mid = h + attn(norm1(h))``, ``out = mid + mlp(norm2(mid))``: proportional
    split at each residual sum, then the branch's rules."""
    R_mid = R_out
    if blk.mlp is not None:
        R_mid, R_m = split_sum(r["mid"], r["mlp"]["y"], R_out)
        R_mid = R_mid + norm_lrp(blk.norm2, r["mid"], mlp_lrp(blk.mlp, r["mlp"], R_m, ctx), ctx)
    R_h, R_a = split_sum(r["h"], r["att"]["y"], R_mid)
    return R_h + norm_lrp(blk.norm1, r["h"], attention_lrp(blk.attn, r["att"], R_a, ctx), ctx)


def _readout_forward(model, h, mask):
    """Final norm then: causal -> last non-padding position; classify -> [CLS] (the first token) or the
    mean over non-padding positions; then the head."""
    y = _norm_parts(model.norm_f, h)[0]
    w = mask.to(y.dtype)
    if model.config.task == "causal" or model.config.readout == "cls":
        idx = masks.last_positions(mask) if model.config.task == "causal" else masks.first_positions(mask)
        w = torch.zeros_like(w).scatter(1, idx[:, None], 1.0)
    pooled = (y * w[..., None]).sum(1) / w.sum(1, keepdim=True)
    return {"h": h, "y": y, "w": w, "pooled": pooled, "logits": _lin(pooled, model.head)}


def readout_lrp(model, r, target, ctx):
    """``R_logit = logit`` at the target; head (linear); pooling ``sum_i w_i y_i / sum w`` (linear:
    one-hot ``w`` for [CLS] / last token); final norm."""
    logits = r["logits"]
    R_logits = torch.zeros_like(logits).scatter(1, target[:, None], logits.gather(1, target[:, None]))
    R_pooled = linear_lrp(r["pooled"], model.head, R_logits, ctx)
    share = r["y"] * (r["w"] / r["w"].sum(1, keepdim=True))[..., None]
    return norm_lrp(model.norm_f, r["h"], share * _div(R_pooled, r["pooled"])[:, None], ctx)


def _embed(model, ids, position_ids):
    tok = model.tok_emb.weight[ids]
    pos = None
    if model.config.position == "learned":
        pos = model.pos_emb.weight[position_ids]
    elif model.config.position == "sinusoidal":
        pos = model.sinusoid[position_ids].to(tok.dtype)
    return tok, pos


# -- entry point ----------------------------------------------------------------------------------
def _check(m: Method, cfg):
    if m.name not in SUPPORTED:
        raise ValueError(f"reference_lrp supports {', '.join(SUPPORTED)}; got {m.name!r}")
    ablation = m.name in ("attnlrp-no-softmax", "attnlrp-full-value")
    if cfg.attention == "linear" and (ablation or (m.norm == "grad" and cfg.normalize)):
        raise NotImplementedError(f"{m.name} with linear attention (the ablation / the live "
                                  "normaliser is defined for softmax attention only)")


def reference_lrp(model, input_ids, method="attnlrp", target=None, attention_mask=None) -> ReferenceResult:
    """Explicit LRP of ``model`` (a float64 :class:`TinyTransformer`) for ``input_ids [B, S]``.

    ``method``: one of :data:`SUPPORTED`; ``target``: int or ``[B]`` (None: argmax); ``attention_mask
    [B, S]`` (1 = token).  Position ids follow the model (``cumsum(mask) - 1``).  No autograd."""
    m, cfg = get_method(method), model.config
    _check(m, cfg)
    ids = input_ids if input_ids.dim() == 2 else input_ids[None]
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.reshape(ids.shape)
    key_keep, (B, S) = mask.bool(), ids.shape
    keep = key_keep[:, None, None, :].expand(B, 1, S, S)
    if cfg.task == "causal":
        keep = keep & torch.ones(S, S, dtype=torch.bool).tril()
    position_ids = masks.position_ids(mask)
    rope = _rope_tables(position_ids, cfg.head_dim, cfg.rope_theta) if cfg.position == "rotary" else None
    ctx = _Ctx(m, cfg, keep, key_keep, rope, m.positions and rope is not None,
               absorbed={k: torch.zeros(B, dtype=torch.float64) for k in KINDS})
    with torch.no_grad():
        tok, pos = _embed(model, ids, position_ids)
        records, h = [], tok if pos is None else tok + pos
        for blk in model.blocks:
            records.append(_block_forward(blk, h, ctx))
            h = records[-1]["out"]
        head = _readout_forward(model, h, mask)
        t = head["logits"].argmax(-1) if target is None else torch.as_tensor(target).long()
        t = t.reshape(-1).expand(B)
        R = readout_lrp(model, head, t, ctx)
        layers = [R.sum(-1)]
        for i in reversed(range(len(records))):
            ctx.layer = i
            R = block_lrp(model.blocks[i], records[i], R, ctx)
            layers.insert(0, R.sum(-1))
        return _result(m, ctx, tok, pos, R, layers, head["logits"].gather(1, t[:, None])[:, 0], t)


def _result(m, ctx, tok, pos, R_h0, layers, logit, target) -> ReferenceResult:
    """Embedding sum ``tok + pos``: proportional split (PA-LRP); non-PA methods drop the position
    share (absorbed as ``"positions"``).  RoPE position relevance per layer (PA-LRP only)."""
    R_tok, R_pos = (R_h0, None) if pos is None else split_sum(tok, pos, R_h0)
    positions = by_layer = rotated = None
    if R_pos is not None and m.positions:
        positions = R_pos.sum(-1)
    elif R_pos is not None:
        ctx.absorb("positions", R_pos)
    if ctx.rope is not None:
        rotated = [ctx.rotated[i] for i in sorted(ctx.rotated)]
        if m.positions:
            zero = torch.zeros_like(R_tok.sum(-1))
            by_layer = [ctx.rope_pos.get(i, zero) for i in range(len(rotated))]
            positions = torch.stack(by_layer).sum(0)
    return ReferenceResult(R_tok.sum(-1), positions, by_layer, layers, logit, target,
                           dict(ctx.absorbed), rotated, m.name)
