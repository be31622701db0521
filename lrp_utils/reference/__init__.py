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
from .model import KINDS, SUPPORTED, ReferenceResult, reference_lrp
from .rope import rope_reference

__all__ = ["reference_lrp", "ReferenceResult", "rope_reference", "KINDS", "SUPPORTED"]
