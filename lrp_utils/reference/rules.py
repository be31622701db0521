"""The rules of the reference LRP, one explicit formula each (see :mod:`lrp_utils.reference`).

No autograd and none of :mod:`lrp_utils.rules` / :mod:`lrp_utils.ops`: every relevance is pushed
through its operation with the written-out ratio (eps = 0).  ``ctx`` is the reference's
per-call state (method, masks, RoPE tables, absorption ledger)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: LayerNorm / RMSNorm epsilons of TinyTransformer's ``Norm`` (``ops.layer_norm`` / ``ops.rms_norm``)
LN_EPS, RMS_EPS = 1e-5, 1e-6


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


# -- the LN-rule written out, for the fast path's tests -------------------------------------------
def layer_norm_const(x, weight=None, bias=None, eps=LN_EPS):
    """LayerNorm over the last axis with the std detached (the LN-rule of Ali et al. 2022; the mean
    stays live, so the centring is conservative).  The formula :func:`lrp_utils.rules.norm_rule_on`
    must match.  ``x [..., D]``."""
    xc = x - x.mean(-1, keepdim=True)
    y = xc / (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt().detach()
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def rms_norm_const(x, weight=None, eps=RMS_EPS):
    """RMSNorm with the root mean square detached (LN-rule).  ``x [..., D]``."""
    y = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt().detach()
    return y * weight if weight is not None else y
