"""Helpers for positional-aware LRP (Bakish et al. 2025)."""
from __future__ import annotations

import torch


def combined_heatmap(exp) -> torch.Tensor:
    """Display map of the authors: token relevance + sum over layers of |position relevance|,
    divided by the max |value| per example.  ``[B, S]``.  For display only: conservation checks
    use the signed, un-normalised ``exp.tokens`` and ``exp.positions``."""
    pos = exp.positions_by_layer or ([exp.positions] if exp.positions is not None else [])
    heat = exp.tokens + sum((p.abs() for p in pos), torch.zeros_like(exp.tokens))
    scale = heat.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(heat.dtype).tiny)
    return heat / scale
