"""The few autograd-level primitives every LRP rule in this package is made of.

LRP is computed as a *modified gradient* (see ``PAPERS.md``, "Notation"): for every tensor ``t``
the relevance is ``R_t = t * g_t`` where ``g`` comes from an ordinary backward pass in which a
handful of operations have their local gradient replaced.  Linear maps, sums, residuals,
reshapes, RoPE rotations and additive masks keep the plain gradient (epsilon rule with eps = 0, the
bias absorbing its share).  Only these primitives are needed:

=====================  ============================================  ===========================
primitive              backward                                      LRP rule
=====================  ============================================  ===========================
``scale_grad(x, c)``   ``g -> c * g`` (value unchanged)              uniform rule (c = 1/2) on a
                                                                     product of two inputs,
                                                                     AttnLRP Eq. 7
``stop_grad(x)``       ``g -> 0``                                    treat as constant (CP-LRP
                                                                     AH- and LN-rules, Ali 2022)
``identity_rule(f,x)`` ``g -> g * f(x) / (x + eps sign(x))``         identity rule on element-
                                                                     wise nonlinearities,
                                                                     AttnLRP Eq. 9
``norm_rule_on(x, y)`` value of the norm output ``y``; gradient of   LN-rule (Ali 2022) on an
                       the norm with its std / rms held constant     already computed LayerNorm
                                                                     or RMSNorm, fused
=====================  ============================================  ===========================

The softmax needs no primitive: AttnLRP's Taylor rule ``R_in = x * (R_out - s * sum R_out)`` *is*
``x`` times the plain softmax gradient.
"""
from __future__ import annotations

import torch

#: stabiliser of the identity rule's division ``f(x) / (x + eps * sign(x))`` (sign(0) = 1), the
#: sign-aware form of LRP's epsilon rule: the denominator never crosses 0, so a pre-activation of
#: exactly ``-eps`` cannot divide by zero (lxt adds ``+eps`` whatever the sign).
IDENTITY_EPS = 1e-10


def stabilize(x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """``x + eps * sign(x)`` with ``sign(0) = 1`` (default ``eps``: :data:`IDENTITY_EPS`): pushed
    away from 0, never through it."""
    eps = IDENTITY_EPS if eps is None else eps
    return torch.where(x >= 0, x + eps, x - eps)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the incoming gradient by ``factor``.

    With ``factor = 0.5`` at the output of a product ``z = a * b`` (or ``a @ b``) of two
    input-dependent factors this is the uniform rule (Achtibat et al. 2024, Eq. 7): each factor
    receives half of ``R_z``.  Any shape.
    """
    if factor == 1:
        return x
    return _ScaleGrad.apply(x, factor)


def stop_grad(x: torch.Tensor) -> torch.Tensor:
    """Treat ``x`` as a constant (no relevance flows into it). Any shape."""
    return x.detach()


_HALF = (torch.float16, torch.bfloat16)


class _IdentityRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out):
        # half precision: form the ratio in float32 (1e-10 underflows in fp16 and 0/0 gives NaN,
        # the known fp16 failure of the reference implementation)
        work = torch.float32 if x.dtype in _HALF else x.dtype
        ctx.save_for_backward(out.to(work) / stabilize(x.to(work)))
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return (grad.to(ratio.dtype) * ratio).to(grad.dtype), None


def identity_rule(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` whose backward passes relevance through unchanged: ``R_in = R_out``.

    Implemented as the gradient ``f(x) / (x + eps sign(x))`` (Achtibat et al. 2024, Eq. 9, with the
    sign-aware stabiliser of :func:`stabilize`), so that ``x * g_x = f(x) * g_out`` up to ``eps``.
    ``fn`` is element-wise; any shape.
    """
    return identity_on(x, fn(x))


def identity_on(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Identity rule for an already computed ``out = f(x)``: the value of ``out``, the gradient
    ``g_out * out / (x + eps sign(x))`` into ``x`` (and none through ``out``'s own graph)."""
    return _IdentityRule.apply(x, out.detach())


class _NormRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out, weight, eps, center):
        xw = x.detach()
        xw = xw.float() if xw.dtype in _HALF else xw
        if center:  # 1 / std of the centred x, from one fused kernel
            scale = torch.native_layer_norm(xw, xw.shape[-1:], None, None, eps)[2]
        else:  # 1 / rms
            scale = xw.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()
        ctx.center = center
        ctx.save_for_backward(scale, None if weight is None else weight.detach().to(scale.dtype))
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        scale, weight = ctx.saved_tensors
        g = grad.to(scale.dtype) * scale
        if weight is not None:
            g.mul_(weight)
        if ctx.center:  # the mean stays live: the centring x - mean(x) is a linear map
            g.sub_(g.mean(-1, keepdim=True))
        return g.to(grad.dtype), None, None, None, None


def norm_rule_on(x: torch.Tensor, out: torch.Tensor, weight: torch.Tensor | None = None,
                 eps: float = 1e-5, center: bool = True) -> torch.Tensor:
    """LN-rule for an already computed ``out = norm(x) * weight (+ bias)``: the value of ``out``
    (bit for bit), and the gradient of the norm with its denominator held constant (Ali et al.
    2022): ``g_x = C(g * weight / std)`` where ``C`` subtracts the feature mean for LayerNorm
    (``center=True``; ``std`` of the centred ``x``) and is the identity for RMSNorm
    (``center=False``; ``rms`` of ``x``).  The same gradient as differentiating
    :func:`lrp_utils.ops.layer_norm` / ``rms_norm`` under the LN-rule, in one node instead of a
    recomputed surrogate.  ``x, out [..., D]``, ``weight [D]``; no gradient reaches ``weight``,
    the bias or ``out``'s own graph.  Half precision is worked in float32."""
    return _NormRule.apply(x, out.detach(), weight, eps, center)
