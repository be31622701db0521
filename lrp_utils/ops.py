"""Rule-aware building blocks: the operations of a transformer that need an LRP rule.

Each function computes the ordinary forward value and attaches the rule of the *active* method
(a :class:`~lrp_utils.methods.Method`, set for the duration of an explanation by :func:`session`;
outside a session the plain gradient is used, so models built from these ops behave as ordinary
PyTorch models).  This module is the one interpreter of a ``Method``: ``TinyTransformer`` calls
these ops directly, and for Hugging Face models the adapters route attention (through
transformers' ``AttentionInterface``) and norms, activations and gates (through forward hooks)
into the same functions for the duration of a call.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .masks import additive
from .methods import METHODS, Method
from .rules import identity_on, norm_rule_on, scale_grad, stop_grad


@dataclass
class AttentionCall:
    """One softmax-attention call, as an ``on_attention`` callback of :func:`session` sees it.

    ``q [B, H, Sq, D]``, ``k, v [B, Hkv, Sk, D]`` (the tensors the attention received, after RoPE),
    ``mask`` (additive or boolean, broadcastable to ``[B, H, Sq, Sk]``, or None), ``scaling``,
    ``n_rep = H / Hkv``, ``out [B, H, Sq, D]`` (part of the graph: a callback may register a
    gradient hook on it), ``module``: the attention module that made the call (HF attention module
    or TinyTransformer's ``Attention``), ``method``: the active rules."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None
    scaling: float
    n_rep: int
    out: torch.Tensor
    module: object = None
    method: Method = METHODS["gi"]
    softcap: float | None = None

    def scores(self) -> torch.Tensor:
        """The masked, scaled (soft-capped) scores ``[B, H, Sq, Sk]`` (recomputed without gradient)."""
        with torch.no_grad():
            return attention_scores(self.q, self.k, self.mask, self.scaling, self.n_rep, self.softcap)

    def probs(self) -> torch.Tensor:
        """The attention probabilities ``[B, H, Sq, Sk]`` (recomputed without gradient: the fused
        kernel does not keep them)."""
        with torch.no_grad():
            return attention_probs(self.q, self.k, self.mask, self.scaling, self.n_rep, self.softcap)


@dataclass
class Session:
    """What the ops need to know during one forward pass.

    ``method``: the active rule map.  ``rotary_positions``: q and k arriving at attention were
    rotated with cos/sin that are explained as inputs (PA-LRP for RoPE), so the rotation products
    get the uniform rule.  ``rotary_dims``: partial rotary (GPT-NeoX, Phi-3 with a
    ``partial_rotary_factor``): only the first ``rotary_dims`` features of each q / k head were
    rotated, so only that share gets the rotation's uniform rule (None: all features).
    ``on_attention``: optional callback receiving an :class:`AttentionCall` after every softmax
    attention (the conservation audit and attention rollout use it).
    ``key_values``: optional ``fn(module, k, v) -> (k, v)`` applied to the keys and values a softmax
    attention receives, before it attends (see :func:`key_values`)."""

    method: Method = METHODS["gi"]
    rotary_positions: bool = False
    rotary_dims: int | None = None
    on_attention: Callable | None = None
    key_values: Callable | None = None
    extra: dict = field(default_factory=dict)


_SESSION: contextvars.ContextVar[Session] = contextvars.ContextVar("lrp_session", default=Session())


def current() -> Session:
    """The active :class:`Session` (plain gradients when none is active)."""
    return _SESSION.get()


@contextlib.contextmanager
def session(method: Method | None = None, **kwargs):
    """Activate ``method`` for the ops within the block; always restores the previous session.
    Keywords: the other fields of :class:`Session`; ``on_attention`` is inherited from the
    enclosing session unless given (so a caller can watch the attention of an ``explain`` call)."""
    kwargs.setdefault("on_attention", current().on_attention)
    token = _SESSION.set(Session(method=method or METHODS["gi"], **kwargs))
    try:
        yield _SESSION.get()
    finally:
        _SESSION.reset(token)


@contextlib.contextmanager
def key_values(fn: Callable | None):
    """Within the block, every :func:`softmax_attention` call passes its keys and values
    ``k, v [B, Hkv, Sk, D]`` (after RoPE, before the grouped-query repeat) through
    ``fn(module, k, v)`` and attends to what it returns (``[B, Hkv, Sk', D]``; the mask must cover
    ``Sk'`` keys).  Leave-one-out uses it to record the keys and values of an unperturbed pass and
    to prepend them to a pass over a suffix of positions (:mod:`lrp_utils.reuse`); ``fn`` may also
    raise to stop a pass once it has what it needs.  The rest of the session is unchanged."""
    token = _SESSION.set(dataclasses.replace(current(), key_values=fn))
    try:
        yield
    finally:
        _SESSION.reset(token)


def _scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    return stop_grad(x) if factor == 0 else scale_grad(x, factor)


def _qk_scale(x: torch.Tensor, factor: float, s: Session) -> torch.Tensor:
    """Gradient scale ``factor`` on q or k ``[B, H, S, D]``; under PA-LRP with RoPE the rotated share
    (the first ``s.rotary_dims`` features, all by default) gets the rotation products' uniform rule
    on top (factor / 2).  The pass-through share of a partial rotary is not a product with cos/sin
    and keeps ``factor``."""
    if not s.rotary_positions:
        return _scale(x, factor)
    r = s.rotary_dims or x.shape[-1]
    if r >= x.shape[-1]:
        return _scale(x, 0.5 * factor)
    return torch.cat([_scale(x[..., :r], 0.5 * factor), _scale(x[..., r:], factor)], dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``[B, Hkv, S, D] -> [B, Hkv * n_rep, S, D]`` (grouped-query attention; plain gradient)."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def softmax_attention(q, k, v, mask=None, scaling=None, n_rep=1, module=None, softcap=None):
    """Scaled dot-product attention with the active method's rules.

    Shapes: ``q [B, H, Sq, D]``, ``k, v [B, Hkv, Sk, D]`` with ``H = Hkv * n_rep``; ``mask``
    additive (float, broadcastable to ``[B, H, Sq, Sk]``) or boolean (True = may attend).
    Returns ``(out [B, H, Sq, D], None)``.  Rules: gradient scales ``qk`` on q and k (uniform rule
    at ``q @ k^T``), ``attn`` on the probabilities (0 = AH-rule), ``value`` on V; the softmax keeps
    its plain gradient (AttnLRP's Taylor rule).  PA-LRP with RoPE adds the uniform rule of the
    rotation products (``q * cos``, ``rot(q) * sin``) by halving q, k (their rotated share).
    ``softcap``: Gemma 2's score soft-capping ``c * tanh(s / c)`` before the mask, an element-wise
    nonlinearity routed through :func:`act_out` (identity rule under AttnLRP / CP-LRP); it runs the
    explicit (unfused) path, since the fused kernel has no soft-capping.

    Every rule here is a constant factor on a path of an otherwise plain gradient, so the modified
    gradient into q and k is the plain one times ``qk * attn`` (the softmax backward is linear in
    its incoming gradient) and into V the plain one times ``value``.  The scales are therefore put
    on q, k and v and the attention itself runs as PyTorch's fused
    ``scaled_dot_product_attention``: the cost of a plain forward and backward.
    :func:`explicit_softmax_attention` writes the same rules out product by product (a test checks
    that the two agree).  The session's ``key_values`` function, if any, first replaces k and v;
    its ``on_attention`` callback, if any, sees the call.
    """
    s = current()
    m = s.method
    if s.key_values is not None:
        k, v = s.key_values(module, k, v)
    scaling = q.shape[-1] ** -0.5 if scaling is None else scaling
    f = m.qk * m.attn
    qs, ks, vs = _qk_scale(q, f, s), _qk_scale(k, f, s), _scale(v, m.value)
    if softcap is None:
        out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=additive(mask, q.dtype), scale=scaling,
                                             enable_gqa=n_rep > 1)
    else:
        out = torch.matmul(attention_probs(qs, ks, mask, scaling, n_rep, softcap), repeat_kv(vs, n_rep))
    if s.on_attention is not None:
        s.on_attention(AttentionCall(q, k, v, mask, scaling, n_rep, out, module, m, softcap))
    return out, None


def attention_scores(q, k, mask=None, scaling=None, n_rep=1, softcap=None) -> torch.Tensor:
    """``q k^T * scaling (soft-capped: c * tanh(. / c), identity rule) + mask`` ``[B, H, Sq, Sk]``
    (``k`` repeated to ``H`` heads)."""
    scaling = q.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(q, repeat_kv(k, n_rep).transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = act_out(scores, softcap * torch.tanh(scores / softcap))
    return apply_mask(scores, mask)


def attention_probs(q, k, mask=None, scaling=None, n_rep=1, softcap=None) -> torch.Tensor:
    """``softmax(q k^T * scaling + mask)`` ``[B, H, Sq, Sk]`` (plain; float32 softmax in half
    precision).  The one place the probabilities are written out."""
    scores = attention_scores(q, k, mask, scaling, n_rep, softcap)
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    return torch.softmax(scores.to(work), dim=-1).to(q.dtype)


def explicit_softmax_attention(q, k, v, mask=None, scaling=None, n_rep=1, softcap=None):
    """:func:`softmax_attention` written out (scores, softmax, probabilities @ V), each rule at its
    own product: the slow replica the fused path is tested against.  Returns ``(out, probs)``."""
    s = current()
    m = s.method
    q, k = _qk_scale(q, m.qk, s), _qk_scale(k, m.qk, s)
    probs = attention_probs(q, k, mask, scaling, n_rep, softcap)
    out = torch.matmul(_scale(probs, m.attn), _scale(repeat_kv(v, n_rep), m.value))
    return out, probs


def apply_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``scores`` plus the mask as an additive one (see :func:`lrp_utils.masks.additive`)."""
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


# -- the interpreter of the element-wise and normalisation rules --------------------------------
# TinyTransformer calls these directly; for Hugging Face models the adapters call them from
# forward hooks on the labelled modules.  The decision "which rule" is taken here and nowhere else.
def act_out(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = f(x)`` of an element-wise nonlinearity, with the identity rule when the method has
    ``act="identity"`` (plain gradient otherwise)."""
    return identity_on(x, out) if current().method.act == "identity" else out


def activation(fn, x: torch.Tensor) -> torch.Tensor:
    """Element-wise nonlinearity ``fn(x)`` through :func:`act_out`."""
    return act_out(x, fn(x))


def norm_out(x: torch.Tensor, out: torch.Tensor, weight=None, eps: float = 1e-5, center: bool = True):
    """``out`` = LayerNorm (``center``) or RMSNorm of ``x`` (times ``weight``, plus a bias), with the
    LN-rule (denominator held constant, :func:`lrp_utils.rules.norm_rule_on`) when the method has
    ``norm="const"``."""
    return norm_rule_on(x, out, weight, eps, center) if current().method.norm == "const" else out


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the last axis through :func:`norm_out`.  ``x [..., D]``."""
    return norm_out(x, F.layer_norm(x, x.shape[-1:], weight, bias, eps), weight, eps, True)


def rms_norm(x, weight=None, eps=1e-6):
    """RMSNorm over the last axis through :func:`norm_out`.  ``x [..., D]``."""
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return norm_out(x, y * weight if weight is not None else y, weight, eps, False)


def gate_in(gate: torch.Tensor) -> torch.Tensor:
    """The gate of a gated MLP ``act(gate) * up`` as it enters ``act``: a constant under
    ``gate="const"`` (lxt's CP-LRP), unchanged otherwise."""
    return stop_grad(gate) if current().method.gate == "const" else gate


def gate_act(gate: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = act(gate)``: identity rule under ``gate="uniform"`` (AttnLRP), else as :func:`act_out`."""
    return identity_on(gate, out) if current().method.gate == "uniform" else act_out(gate, out)


def gate_product(p: torch.Tensor) -> torch.Tensor:
    """The product ``act(gate) * up``: uniform rule (each factor half) under ``gate="uniform"``."""
    return scale_grad(p, 0.5) if current().method.gate == "uniform" else p


def gated(act, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Gated MLP product ``act(gate) * up`` (SwiGLU) through the three gate rules above."""
    g = gate_in(gate)
    return gate_product(gate_act(g, act(g)) * up)


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
