"""The toy of You et al. (2025): ``y = x1 * x2 * x3`` built in two association orders.

Both modules compute the same function, so an implementation-invariant attribution must give the
same numbers for both.  At ``x = (2, 3, 4)``: AttnLRP's uniform rule gives ``(6, 6, 12)`` for
``(x1 * x2) * x3`` and ``(12, 6, 6)`` for ``x1 * (x2 * x3)``, while GI ``(24, 24, 24)``,
IG ``(8, 8, 8)`` and leave-one-out (``x_i = 0``: ``(24, 24, 24)``; ``x_i = 1``: ``(12, 16, 18)``)
agree across the two.
"""
from __future__ import annotations

import torch
from captum.attr import IntegratedGradients
from torch import nn

from . import ops
from .methods import get_method


class LeftProduct(nn.Module):
    """``(x1 * x2) * x3`` for ``x [..., 3]``."""

    def forward(self, x):
        return ops.product(ops.product(x[..., 0], x[..., 1]), x[..., 2])


class RightProduct(nn.Module):
    """``x1 * (x2 * x3)`` for ``x [..., 3]``."""

    def forward(self, x):
        return ops.product(x[..., 0], ops.product(x[..., 1], x[..., 2]))


def modified_gradient_x_input(module: nn.Module, x: torch.Tensor, method: str) -> torch.Tensor:
    """``x * g`` where ``g`` is the gradient of ``module(x)`` under ``method``'s rules."""
    x = x.detach().clone().requires_grad_()
    with ops.session(get_method(method)), torch.enable_grad():
        (g,) = torch.autograd.grad(module(x).sum(), x)
    return (x * g).detach()


def leave_one_out(module: nn.Module, x: torch.Tensor, value: float) -> torch.Tensor:
    """``f(x) - f(x with x_i := value)`` for every feature ``i`` of ``x [n]``."""
    with torch.no_grad():
        base, out = module(x), []
        for i in range(x.shape[-1]):
            z = x.clone()
            z[..., i] = value
            out.append(base - module(z))
    return torch.stack(out, -1)


def toy_attributions(x=(2.0, 3.0, 4.0)) -> dict:
    """``{method: {"left": [...], "right": [...]}}`` for attnlrp, gi, ig, loo-zero, loo-one."""
    x = torch.tensor(x, dtype=torch.float64)
    out = {}
    for order, module in (("left", LeftProduct()), ("right", RightProduct())):
        res = {
            "attnlrp": modified_gradient_x_input(module, x, "attnlrp"),
            "gi": modified_gradient_x_input(module, x, "gi"),
            "ig": IntegratedGradients(module).attribute(x[None], torch.zeros(1, 3, dtype=x.dtype))[0],
            "loo-zero": leave_one_out(module, x, 0.0),
            "loo-one": leave_one_out(module, x, 1.0),
        }
        for name, value in res.items():
            out.setdefault(name, {})[order] = [round(float(v), 10) for v in value]
    return out
