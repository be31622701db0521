"""A slow, explicit, rule-by-rule LRP for :class:`~lrp_utils.models.TinyTransformer`: the oracle.

Everything here is written straight from the rule definitions (``PAPERS.md``, "Notation", and
sections 001/002), *without* autograd and without the modified-gradient primitives of
:mod:`lrp_utils.rules` / :mod:`lrp_utils.ops`.  The forward pass is recomputed with plain tensor
ops from the model's weights, recording every intermediate; relevance tensors are then pushed
backwards block by block with explicit formulas.  With eps = 0 these formulas equal
``x * modified gradient`` (the fast :func:`lrp_utils.explain`), so the two must agree to float64
rounding (plus the fast identity rule's ``1e-10`` in ``f(x) / (x + 1e-10)``).

Rules (R = relevance, all ratios with eps = 0):

* linear ``z = W x + b``: ``R_x[i] = sum_j x_i W_ji / z_j R_z[j]``; the bias absorbs ``b_j / z_j R_z[j]``;
* sums (residual, ``tok + pos``): proportional split ``R_a = a / (a + b) R``;
* LayerNorm / RMSNorm, LN-rule: std / rms constant, so the norm (centring included) is a linear map;
* element-wise nonlinearities (GELU, SiLU, elu + 1): identity ``R_in = R_out``;
* products of two input-dependent factors (``act(g) * u``, ``q @ k^T``, ``A @ V``, ``k_j v_j^T``):
  epsilon rule over the terms, then each factor a share (uniform rule: 1/2 each);
* softmax (AttnLRP): Taylor rule ``R_in = x (R_out - s sum R_out)``; its bias terms absorb the rest;
* RoPE: linear in q with cos/sin constant; PA-LRP: cos, sin inputs, each rotation product uniform.

The relevance *budget* closes per example: ``tokens + positions + sum(absorbed) == logit``.
The ratio form needs nonzero denominators ``z``: use random O(1) weights (e.g.
``reset_parameters(0.5, seed)``).  Where a denominator is *structurally* zero (a zeroed padding key
of linear attention, a causally masked score) the numerator is zero too and the ratio is taken as 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .methods import Method, get_method

#: LayerNorm / RMSNorm epsilons of TinyTransformer's ``Norm`` (``ops.layer_norm`` / ``ops.rms_norm``)
LN_EPS, RMS_EPS = 1e-5, 1e-6
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


def _div(num, den):
    """``num / den``, 0 where ``den == 0`` (only at structurally absent entries, where num is 0)."""
    zero = den == 0
    return torch.where(zero, torch.zeros((), dtype=num.dtype), num / torch.where(zero, 1.0, den))


# -- generic rules --------------------------------------------------------------------------------
def _lin(x, lin):
    z = x @ lin.weight.T
    return z + lin.bias if lin.bias is not None else z


def linear_lrp(x, lin, R_z, ctx):
    """Epsilon rule (eps = 0) for ``z = W x + b``: ``R_x[i] = x_i sum_j W_ji R_z[j] / z_j``; the bias
    absorbs ``b_j R_z[j] / z_j`` (PAPERS.md Notation: plain gradient = epsilon rule)."""
    c = _div(R_z, _lin(x, lin))
    if lin.bias is not None:
        ctx.absorb("bias", c * lin.bias)
    return x * (c @ lin.weight)


def split_sum(a, b, R):
    """Epsilon rule for the sum ``a + b`` (residual, ``tok + pos``, PA-LRP Sec. "Added PE"):
    ``R_a = a / (a + b) R``, ``R_b = b / (a + b) R`` element-wise; conservative."""
    c = _div(R, a + b)
    return a * c, b * c


def matmul_lrp(a, b, R_c, share_a, share_b, ctx):
    """``C = A @ B`` of two input-dependent factors: epsilon rule over the terms ``A_ij B_jk`` of
    ``C_ik``, then ``share_a`` of each term to ``A`` and ``share_b`` to ``B`` (uniform rule 1/2 : 1/2,
    AttnLRP Eq. 7; share 0 = factor held constant).  Shares not summing to 1 (ablations) absorb
    ``(1 - share_a - share_b) R_C`` into ``"shares"``."""
    z = _div(R_c, a @ b)
    ctx.absorb("shares", (1 - share_a - share_b) * R_c)
    return share_a * a * (z @ b.transpose(-1, -2)), share_b * b * (a.transpose(-1, -2) @ z)


# -- norms ----------------------------------------------------------------------------------------
def _norm_parts(norm, x):
    """``(y, scale)`` with ``y`` the norm's output and ``scale`` its std / rms ``[..., 1]``."""
    if norm.kind == "layernorm":
        xc = x - x.mean(-1, keepdim=True)
        sd = (xc.pow(2).mean(-1, keepdim=True) + LN_EPS).sqrt()
        y = xc / sd * norm.weight
        return (y + norm.bias if norm.bias is not None else y), sd
    if norm.kind == "rmsnorm":
        rms = (x.pow(2).mean(-1, keepdim=True) + RMS_EPS).sqrt()
        return x / rms * norm.weight, rms
    return x, None


def norm_lrp(norm, x, R_y, ctx):
    """LN-rule (Ali et al. 2022): std / rms constant, so LayerNorm ``y = w (x - mean x) / std + b`` is
    the linear map ``W = diag(w / std) (I - 11^T / D)`` (centring live): epsilon rule over it, bias
    absorbing ``b R_y / y``; RMSNorm is ``diag(w / rms)``.  ``norm="grad"`` (cp-lrp-ah): GI through the
    exact Jacobian ``J``, ``R_x = x J^T (R_y / y)``; the std's share is absorbed as ``"norm"``."""
    if norm.kind == "none":
        return R_y
    y, sd = _norm_parts(norm, x)
    c = _div(R_y, y)
    if norm.bias is not None:
        ctx.absorb("bias", c * norm.bias)
    g, D = c * norm.weight / sd, x.shape[-1]
    if ctx.m.norm == "const":
        return x * (g - g.mean(-1, keepdim=True) if norm.kind == "layernorm" else g)
    if norm.kind == "layernorm":
        xh = (x - x.mean(-1, keepdim=True)) / sd
        R_x = x * (g - g.mean(-1, keepdim=True) - xh * (g * xh).mean(-1, keepdim=True))
    else:
        R_x = x * (g - x * (g * x).sum(-1, keepdim=True) / (D * sd * sd))
    bias = c * norm.bias if norm.bias is not None else 0
    ctx.absorb("norm", R_y - bias)
    ctx.absorb("norm", -R_x)
    return R_x


# -- MLP ------------------------------------------------------------------------------------------
def _mlp_forward(mlp, x):
    if mlp.kind == "swiglu":
        g, u = _lin(x, mlp.gate), _lin(x, mlp.up)
        p = F.silu(g) * u
    else:
        g, u = None, _lin(x, mlp.up)
        p = F.gelu(u)
    return {"x": x, "g": g, "u": u, "p": p, "y": _lin(p, mlp.down)}


def mlp_lrp(mlp, r, R_y, ctx):
    """GELU MLP: linear, identity rule on GELU (AttnLRP Eq. 9), linear.  SwiGLU ``silu(g) * u``:
    one term, so ``attnlrp`` gives each factor half (identity rule through SiLU), ``cp-lrp``'s
    constant gate gives ``u`` all of it."""
    R_p = linear_lrp(r["p"], mlp.down, R_y, ctx)
    if mlp.kind != "swiglu":
        return linear_lrp(r["x"], mlp.up, R_p, ctx)  # identity rule: R_u = R_p
    if ctx.m.gate == "const":
        return linear_lrp(r["x"], mlp.up, R_p, ctx)
    if ctx.m.gate != "uniform":
        raise NotImplementedError(f"gate rule {ctx.m.gate!r}")
    return linear_lrp(r["x"], mlp.up, 0.5 * R_p, ctx) + linear_lrp(r["x"], mlp.gate, 0.5 * R_p, ctx)


# -- rotary ---------------------------------------------------------------------------------------
def _rope_tables(position_ids, head_dim, theta):
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = position_ids[..., None].to(torch.float64) * inv
    ang = torch.cat((ang, ang), -1)
    return ang.cos(), ang.sin()


def _rot(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


def _rope_terms(x, ctx):
    cos, sin = (t[:, None] for t in ctx.rope)
    return x * cos, _rot(x) * sin


def rope_lrp(x, R_y, ctx):
    """RoPE ``y_d = x_d cos_d + rot(x)_d sin_d``: epsilon rule over the two terms of each feature.
    cos/sin constant (attnlrp, cp-lrp): all to ``x`` (``rot(x)_d`` is ``±x`` of the partner feature
    ``d ± D/2``).  PA-LRP: cos, sin are inputs and each product gets the uniform rule, so ``x`` and
    the tables get half each.  Returns ``(R_x, R_tables [B, S] or None)``."""
    t1, t2 = _rope_terms(x, ctx)
    c = _div(R_y, t1 + t2)
    R1, R2 = t1 * c, t2 * c
    R_x = R1 + torch.roll(R2, x.shape[-1] // 2, -1)  # term d of rot(x) belongs to x_{d -+ D/2}
    if not ctx.pa_rope:
        return R_x, None
    return 0.5 * R_x, 0.5 * (R1 + R2).sum((1, 3))


# -- attention cores (q [B, H, S, D]; k, v already repeated to H heads) --------------------------
def _softmax_fwd(q, k, v, ctx):
    P = q @ k.transpose(-1, -2)
    S = torch.where(ctx.keep, P * q.shape[-1] ** -0.5, torch.finfo(P.dtype).min)
    A = torch.softmax(S, -1)
    return {"q": q, "k": k, "v": v, "S": S, "A": A, "out": A @ v}


def softmax_lrp(c, R_out, ctx):
    """Softmax attention.  ``A @ V``: matmul rule with shares (attn, value) (cp-lrp: A constant,
    AH-rule; attnlrp: 1/2 each).  Softmax: Taylor rule ``R_S = S (R_A - A sum_j R_A)`` on the masked
    scores (masked entries: exactly 0); the softmax absorbs ``sum R_A - sum R_S``.  The scaling
    ``1/sqrt(d)`` is linear (``R_{qk^T} = R_S``); ``q @ k^T``: matmul rule with shares (qk, qk)."""
    m = ctx.m
    R_A, R_v = matmul_lrp(c["A"], c["v"], R_out, m.attn, m.value, ctx)
    taylor = c["S"] * (R_A - c["A"] * R_A.sum(-1, keepdim=True))
    R_S = torch.where(ctx.keep, taylor, torch.zeros((), dtype=taylor.dtype))
    ctx.absorb("softmax", R_A - R_S)
    R_q, R_kT = matmul_lrp(c["q"], c["k"].transpose(-1, -2), R_S, m.qk, m.qk, ctx)
    return R_q, R_kT.transpose(-1, -2), R_v


def _features(q, k, v, ctx):
    """Feature maps (identity rule for elu + 1) and padding keys zeroed, as in ``ops``."""
    fm = (lambda t: F.elu(t) + 1) if ctx.cfg.feature_map == "elu1" else (lambda t: t)
    w = ctx.key_keep[:, None, :, None].to(v.dtype)
    return fm(q), fm(k) * w, v * w


def _linear_qk_v_fwd(q, k, v, ctx):
    qf, kf, v = _features(q, k, v, ctx)
    P = torch.where(ctx.keep, qf @ kf.transpose(-1, -2), torch.zeros((), dtype=v.dtype))
    An = P / P.sum(-1, keepdim=True) if ctx.cfg.normalize else P
    return {"qf": qf, "kf": kf, "v": v, "An": An, "out": An @ v}


def linear_qk_v_lrp(c, R_out, ctx):
    """Linear attention ``(phi(Q) phi(K)^T) V`` (You et al. 2025): matmul rule at ``A @ V`` with
    shares (attn, value), the normaliser constant (``A = P / den`` is linear in ``P``), matmul rule
    at ``phi(Q) phi(K)^T`` with shares (qk, qk): AttnLRP's Q : K : V = 1/4 : 1/4 : 1/2.  Identity rule
    through ``phi``."""
    m = ctx.m
    R_A, R_v = matmul_lrp(c["An"], c["v"], R_out, m.attn, m.value, ctx)
    R_q, R_kT = matmul_lrp(c["qf"], c["kf"].transpose(-1, -2), R_A, m.qk, m.qk, ctx)
    return R_q, R_kT.transpose(-1, -2), R_v


def _linear_q_kv_fwd(q, k, v, ctx):
    qf, kf, v = _features(q, k, v, ctx)
    T = kf[..., :, None] * v[..., None, :]  # [B, H, S, D, E] terms k_j v_j^T
    if ctx.cfg.task == "causal":
        kv, ksum = T.cumsum(2), kf.cumsum(2)
    else:
        kv, ksum = T.sum(2, keepdim=True).expand_as(T), kf.sum(2, keepdim=True).expand_as(kf)
    num = torch.einsum("bhsd,bhsde->bhse", qf, kv)
    den = (qf * ksum).sum(-1, keepdim=True)
    return {"qf": qf, "T": T, "kv": kv, "num": num, "out": num / den if ctx.cfg.normalize else num}


def linear_q_kv_lrp(c, R_out, ctx):
    """Linear attention ``phi(Q) (phi(K)^T V)`` (causal: prefix sums ``kv_i = sum_{j<=i} k_j v_j^T``).
    Normaliser constant (``R_num = R_out``); matmul rule at ``phi(q_i) kv_i`` with shares (attn, value);
    epsilon rule over the (prefix-)sum terms of ``kv``; uniform rule per product ``k_jd v_je``:
    AttnLRP's Q : K : V = 1/2 : 1/4 : 1/4.  cp-lrp: phi(q), phi(k) constant, V gets all."""
    m = ctx.m
    sq, skv, sk, sv = (0.0, 1.0, 0.0, 1.0) if m.attn == 0 else (m.attn, m.value, m.qk, m.qk)
    R_U = c["qf"][..., None] * c["kv"] * _div(R_out, c["num"])[..., None, :]  # terms q_id kv_ide
    ctx.absorb("shares", (1 - sq - skv) * R_out)
    R_q, R_kv = sq * R_U.sum(-1), skv * R_U
    z = _div(R_kv, c["kv"])
    back = z.flip(2).cumsum(2).flip(2) if ctx.cfg.task == "causal" else z.sum(2, keepdim=True)
    R_T = c["T"] * back  # term j receives from every kv_i that contains it
    ctx.absorb("shares", (1 - sk - sv) * R_kv)
    return R_q, sk * R_T.sum(-1), sv * R_T.sum(-2)


_CORES = {"softmax": (_softmax_fwd, softmax_lrp), "(qk)v": (_linear_qk_v_fwd, linear_qk_v_lrp),
          "q(kv)": (_linear_q_kv_fwd, linear_q_kv_lrp)}


def _core(ctx):
    return _CORES["softmax" if ctx.cfg.attention == "softmax" else ctx.cfg.order]


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
    """Final norm then: causal -> last non-padding position; classify -> [CLS] (position 0) or the
    mean over non-padding positions; then the head."""
    y = _norm_parts(model.norm_f, h)[0]
    B, S, _ = y.shape
    w = mask.to(y.dtype)
    if model.config.task == "causal" or model.config.readout == "cls":
        last = S - 1 - mask.flip(1).long().argmax(1)
        idx = last if model.config.task == "causal" else torch.zeros_like(last)
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
    position_ids = (mask.long().cumsum(1) - 1).clamp(min=0)
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
