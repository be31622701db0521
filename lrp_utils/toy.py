"""The toy of You et al. (2025): ``y = x1 * x2 * x3`` built in two association orders.

Both modules compute the same function, so an implementation-invariant attribution must give the
same numbers for both.  At ``x = (2, 3, 4)``: AttnLRP's uniform rule gives ``(6, 6, 12)`` for
``(x1 * x2) * x3`` and ``(12, 6, 6)`` for ``x1 * (x2 * x3)``, while GI ``(24, 24, 24)``,
IG ``(8, 8, 8)`` and leave-one-out (``x_i = 0``: ``(24, 24, 24)``; ``x_i = 1``: ``(12, 16, 18)``)
agree across the two.
"""
from __future__ import annotations

from pathlib import Path

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


# --------------------------------------------------------------------------- table, claims, caption
#: the numbers You et al. (2025) give for x = (2, 3, 4) (PAPERS.md): AttnLRP per order, the rest in both
PAPER_VALUES = {"attnlrp": {"left": (6, 6, 12), "right": (12, 6, 6)}, "gi": (24, 24, 24), "ig": (8, 8, 8),
                "loo-zero": (24, 24, 24), "loo-one": (12, 16, 18)}
#: largest |R - paper| accepted as "equal": float64 rounding, except IG (captum's Riemann sum, ~1e-8)
TOY_TOL = {"ig": 1e-6}
TOY_CSV = "03_toy.csv"
_TOY_MODEL = "toy y = x1 x2 x3 at x = (2, 3, 4)"
_TOY_CLAIMS = {  # method -> (claim_id, the paper's statement)
    "attnlrp": ("toy-attnlrp", "AttnLRP's uniform product rule gives (6, 6, 12) for (x1 x2) x3 and (12, 6, 6) "
                               "for x1 (x2 x3): one function, two attributions"),
    "gi": ("toy-gi-invariant", "GI is implementation invariant: (24, 24, 24) in both orders"),
    "ig": ("toy-ig-invariant", "IG (zero baseline) is implementation invariant: (8, 8, 8) in both orders"),
    "loo-zero": ("toy-loo-zero-invariant", "LOO with x_i := 0 is implementation invariant: (24, 24, 24) in both orders"),
    "loo-one": ("toy-loo-one-invariant", "LOO with x_i := 1 is implementation invariant: (12, 16, 18) in both orders"),
}


def toy_table(x=(2.0, 3.0, 4.0)):
    """:func:`toy_attributions` as a tidy DataFrame: ``method, order`` (``left`` = ``(x1 x2) x3``,
    ``right`` = ``x1 (x2 x3)``), ``input`` (``x1``..``x3``), ``relevance``."""
    import pandas as pd

    return pd.DataFrame([{"method": m, "order": o, "input": f"x{i + 1}", "relevance": r}
                         for m, by_order in toy_attributions(x).items()
                         for o, values in by_order.items() for i, r in enumerate(values)])


def save_toy_table(figures=None):
    """Write :func:`toy_table` to ``figures/03_toy.csv`` (or under ``figures``); returns the path."""
    from .paths import figure_path

    path = figure_path(TOY_CSV) if figures is None else Path(figures) / TOY_CSV
    toy_table().to_csv(path, index=False)
    return path


def _toy_relevance(figures) -> dict:
    """``{(method, order): [R_x1, R_x2, R_x3]}`` read from ``03_toy.csv``."""
    import pandas as pd

    df = pd.read_csv(Path(figures) / TOY_CSV).sort_values(["method", "order", "input"])
    return {k: g.relevance.tolist() for k, g in df.groupby(["method", "order"])}


def toy_claims(figures) -> list:
    """Notebook 03's toy claims from ``figures/03_toy.csv``: per method, the largest deviation from the
    paper's numbers over both orders and the three inputs, judged as an exact identity."""
    from .claims import Claim, Exact

    rel, rows = _toy_relevance(figures), []
    for method, (claim_id, claim) in _TOY_CLAIMS.items():
        want = PAPER_VALUES[method]
        dev = max(abs(r - w) for order in ("left", "right")
                  for r, w in zip(rel[method, order], want[order] if isinstance(want, dict) else want))
        rows.append(Claim("03", claim_id, "You et al. 2025 (i)", claim,
                          "max |R - paper's value| over both orders and x1..x3", _TOY_MODEL, dev,
                          Exact(TOY_TOL.get(method, 1e-12)), n=1, checked_in_ci=True))
    return rows


def toy_caption(figures) -> str:
    """README caption of ``03_toy.png`` from ``03_toy.csv``."""
    rel = _toy_relevance(figures)
    show = lambda values: "(" + ", ".join(f"{v:.3g}" for v in values) + ")"  # noqa: E731
    same = [m for m in ("gi", "ig", "loo-zero", "loo-one") if rel[m, "left"] == rel[m, "right"]]
    names = {"gi": "GI", "ig": "IG", "loo-zero": "LOO (x_i := 0)", "loo-one": "LOO (x_i := 1)"}
    invariant = ", ".join(f"{names[m]} {show(rel[m, 'left'])}" for m in same)
    return (f"y = x1 x2 x3 at x = (2, 3, 4) in two association orders: AttnLRP gives {show(rel['attnlrp', 'left'])} "
            f"for (x1 x2) x3 and {show(rel['attnlrp', 'right'])} for x1 (x2 x3); identical in both orders: "
            f"{invariant or 'none'}.")


def _register() -> None:
    from . import claims

    # the claims builder of notebook 03 (lrp_utils.studies.linear_attention.claims_from_csvs) includes toy_claims
    claims.register_caption("03", "03_toy.png", toy_caption)


_register()
