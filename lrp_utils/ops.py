"""Rule-aware building blocks: the operations of a transformer that need an LRP rule.

Each function computes the ordinary forward value and attaches the rule of the *active* method
(a :class:`~lrp_utils.methods.Method`, set for the duration of an explanation by :func:`session`;
outside a session the plain gradient is used, so models built from these ops behave as ordinary
PyTorch models).  ``TinyTransformer`` calls them directly; for Hugging Face models the adapters
route attention, norms and activations through them for the duration of a call.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .methods import METHODS, Method
from .rules import identity_rule, scale_grad, stop_grad


@dataclass
class Session:
    """What the ops need to know during one forward pass.

    ``method``: the active rule map.  ``rotary_positions``: q and k arriving at attention were
    rotated with cos/sin that are explained as inputs (PA-LRP for RoPE), so the rotation products
    get the uniform rule.  ``probs``: if a list, attention probabilities ``[B, H, S, S]`` of every
    attention call are appended to it (used by attention rollout)."""

    method: Method = METHODS["gi"]
    rotary_positions: bool = False
    probs: list | None = None
    extra: dict = field(default_factory=dict)


_SESSION: contextvars.ContextVar[Session] = contextvars.ContextVar("lrp_session", default=Session())


def current() -> Session:
    """The active :class:`Session` (plain gradients when none is active)."""
    return _SESSION.get()


@contextlib.contextmanager
def session(method: Method | None = None, **kwargs):
    """Activate ``method`` for the ops within the block; always restores the previous session."""
    token = _SESSION.set(Session(method=method or METHODS["gi"], **kwargs))
    try:
        yield _SESSION.get()
    finally:
        _SESSION.reset(token)


def _scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    return stop_grad(x) if factor == 0 else scale_grad(x, factor)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``[B, Hkv, S, D] -> [B, Hkv * n_rep, S, D]`` (grouped-query attention; plain gradient)."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def softmax_attention(q, k, v, mask=None, scaling=None, n_rep=1):
    """Scaled dot-product attention with the active method's rules.

    Shapes: ``q [B, H, Sq, D]``, ``k, v [B, Hkv, Sk, D]`` with ``H = Hkv * n_rep``; ``mask``
    additive (float, broadcastable to ``[B, H, Sq, Sk]``) or boolean (True = may attend).
    Returns ``(out [B, H, Sq, D], probs [B, H, Sq, Sk] or None)``.  Rules: gradient scales ``qk``
    on q and k (uniform rule at ``q @ k^T``), ``attn`` on the probabilities (0 = AH-rule),
    ``value`` on V; the softmax keeps its plain gradient (AttnLRP's Taylor rule).  PA-LRP with RoPE
    adds the uniform rule of the rotation products (``q * cos``, ``rot(q) * sin``) by halving q, k.

    Every rule here is a constant factor on a path of an otherwise plain gradient, so the modified
    gradient into q and k is the plain one times ``qk * attn`` (the softmax backward is linear in
    its incoming gradient) and into V the plain one times ``value``.  The scales are therefore put
    on q, k and v and the attention itself runs as PyTorch's fused
    ``scaled_dot_product_attention``: the cost of a plain forward and backward.  The explicit
    computation (:func:`explicit_softmax_attention`) runs only when the session records the
    probabilities (attention rollout); a test checks that the two agree.
    """
    s = current()
    if s.probs is not None:
        return explicit_softmax_attention(q, k, v, mask, scaling, n_rep)
    m = s.method
    f = m.qk * m.attn * (0.5 if s.rotary_positions else 1.0)
    q, k, v = _scale(q, f), _scale(k, f), _scale(v, m.value)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive(mask, q.dtype), scale=scaling,
                                         enable_gqa=n_rep > 1)
    return out, None


def explicit_softmax_attention(q, k, v, mask=None, scaling=None, n_rep=1):
    """:func:`softmax_attention` written out (scores, softmax, probabilities @ V), each rule at its
    own product.  Returns ``(out, probs)``; records ``probs`` when the session asks for them."""
    s = current()
    m = s.method
    rot = 0.5 if s.rotary_positions else 1.0
    q, k = _scale(q, m.qk * rot), _scale(k, m.qk * rot)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scaling = q.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
    scores = apply_mask(scores, mask)
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    probs = torch.softmax(scores.to(work), dim=-1).to(q.dtype)
    if s.probs is not None:
        s.probs.append(probs.detach())
    out = torch.matmul(_scale(probs, m.attn), _scale(v, m.value))
    return out, probs


def additive(mask: torch.Tensor | None, dtype) -> torch.Tensor | None:
    """A boolean mask (True = may attend) as an additive one in ``dtype``: 0 where kept,
    ``finfo.min`` elsewhere (finite, so a query that may read nothing averages uniformly instead of
    giving NaN).  Float masks are cast to ``dtype``; ``None`` stays ``None``."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask.to(dtype)


def apply_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``scores`` plus the mask as an additive one (see :func:`additive`; never NaN)."""
    return scores if mask is None else scores + additive(mask, scores.dtype)


def feature_map(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Linear-attention feature map: ``"identity"`` or ``"elu1"`` (elu(x) + 1, identity rule)."""
    if kind == "identity":
        return x
    if kind == "elu1":
        return activation(lambda t: F.elu(t) + 1, x)
    raise ValueError(f"unknown feature map {kind!r}; valid: 'identity', 'elu1'")


def linear_attention(q, k, v, key_keep=None, causal=False, keep=None, order="(qk)v",
                     fmap="identity", normalize=False, n_rep=1):
    """Linear attention ``phi(Q) phi(K)^T V`` without softmax, in either association order.

    Shapes: ``q [B, H, S, D]``, ``k, v [B, Hkv, S, D]``; ``key_keep [B, S]`` boolean (False =
    padding), ``causal`` (query i reads keys j <= i).  ``order="(qk)v"`` forms the ``S x S`` matrix
    first; ``order="q(kv)"`` forms ``phi(K)^T V`` first (prefix sums of ``phi(k_j)^T v_j`` when
    causal).  Both compute the same function.  ``keep`` (boolean ``[B, 1|H, S, S]``, True = may
    read) is an arbitrary extra mask, used by leave-one-out; it is applied in the first order
    (LOO is implementation invariant).  ``normalize`` divides by ``phi(q_i) . sum_j phi(k_j)``,
    held constant under the LN-rule.  Returns ``out [B, H, S, D]``.
    """
    if order not in ("(qk)v", "q(kv)"):
        raise ValueError(f"unknown association order {order!r}; valid: '(qk)v', 'q(kv)'")
    s = current()
    m = s.method
    if s.rotary_positions:  # PA-LRP: uniform rule on the rotation products q*cos, rot(q)*sin
        q, k = scale_grad(q, 0.5), scale_grad(k, 0.5)
    qf, kf = feature_map(q, fmap), repeat_kv(feature_map(k, fmap), n_rep)
    v = repeat_kv(v, n_rep)
    if key_keep is not None:
        w = key_keep[:, None, :, None]
        kf, v = kf.masked_fill(~w, 0.0), v.masked_fill(~w, 0.0)
    if order == "q(kv)" and keep is None:
        return _linear_q_kv(qf, kf, v, m, normalize, causal)
    scores = torch.matmul(_scale(qf, m.qk), _scale(kf, m.qk).transpose(-1, -2))
    if causal:
        scores = torch.tril(scores)
    if keep is not None:
        scores = scores * keep.to(scores.dtype)
    if normalize:
        scores = scores / _norm_const(_nonzero(scores.sum(-1, keepdim=True)), m)
    return torch.matmul(_scale(scores, m.attn), _scale(v, m.value))


def _linear_q_kv(qf, kf, v, m: Method, normalize: bool, causal: bool):
    """``phi(Q) (phi(K)^T V)`` with the uniform rule at both products (Q:K:V = 1/2:1/4:1/4)."""
    cp = m.attn == 0  # CP: phi(q), phi(k) constant, V receives all relevance
    ks, vs = (stop_grad(kf), v) if cp else (_scale(kf, m.qk), _scale(v, m.qk))
    qs = stop_grad(qf) if cp else _scale(qf, m.attn)
    if causal:  # kv_i = sum_{j <= i} k_j^T v_j, [B, H, S, D, D]
        kv = torch.cumsum(ks.unsqueeze(-1) * vs.unsqueeze(-2), dim=2)
        kv = kv if cp else _scale(kv, m.value)
        out = torch.einsum("bhsd,bhsde->bhse", qs, kv)
        den = torch.einsum("bhsd,bhsd->bhs", qf, torch.cumsum(kf, dim=2)).unsqueeze(-1)
    else:
        kv = torch.matmul(ks.transpose(-1, -2), vs)
        kv = kv if cp else _scale(kv, m.value)
        out = torch.matmul(qs, kv)
        den = torch.matmul(qf, kf.sum(-2, keepdim=True).transpose(-1, -2))  # [B, H, S, 1]
    return out / _norm_const(_nonzero(den), m) if normalize else out


def _nonzero(den: torch.Tensor) -> torch.Tensor:
    """A query that may read no key (left padding) has a zero normaliser and a zero numerator:
    divide by 1 there instead of producing 0/0."""
    return den.masked_fill(den == 0, 1.0)


def _norm_const(den: torch.Tensor, m: Method) -> torch.Tensor:
    return stop_grad(den) if m.norm == "const" else den


def activation(fn, x: torch.Tensor) -> torch.Tensor:
    """Element-wise nonlinearity ``fn(x)``; identity rule under LRP methods."""
    return identity_rule(fn, x) if current().method.act == "identity" else fn(x)


def gated(act, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Gated MLP product ``act(gate) * up`` (SwiGLU).  Rules: ``"uniform"`` (identity rule on act,
    each factor half), ``"const"`` (gate constant, up gets all), ``"grad"`` (plain)."""
    rule = current().method.gate
    if rule == "const":
        return act(stop_grad(gate)) * up
    if rule == "uniform":
        return scale_grad(identity_rule(act, gate) * up, 0.5)
    return act(gate) * up


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the last axis; the LN-rule detaches the std (the mean stays live, so the
    centring is conservative).  ``x [..., D]``."""
    mean = x.mean(-1, keepdim=True)
    std = ((x - mean).pow(2).mean(-1, keepdim=True) + eps).sqrt()
    y = (x - mean) / _norm_const(std, current().method)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def rms_norm(x, weight=None, eps=1e-6):
    """RMSNorm over the last axis; the LN-rule detaches the root mean square.  ``x [..., D]``."""
    rms = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    y = x / _norm_const(rms, current().method)
    return y * weight if weight is not None else y


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last axis (RoPE, LLaMA convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary encoding ``x * cos + rot(x) * sin``; ``x [B, H, S, D]``, ``cos, sin [B, S, D]``."""
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise product of two input-dependent factors; uniform rule (each factor half of the
    relevance, AttnLRP Eq. 7) when the method uses it for ``q @ k^T`` (``qk = 0.5``)."""
    return scale_grad(a * b, current().method.qk)
