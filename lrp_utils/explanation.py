"""The result object of :func:`lrp_utils.explain`."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Explanation:
    """Raw relevance (no normalisation; see ``lrp_utils.viz`` for display scaling), on CPU.

    ==================  =======================  ==================================================
    field               shape                    meaning
    ==================  =======================  ==================================================
    ``tokens``          ``[B, S]``               relevance of each token's word embedding
    ``positions``       ``[B, S]`` or None       relevance of each position's encoding (PA-LRP);
                                                 for RoPE the sum over layers
    ``layers``          list of ``L+1 [B, S]``   residual-stream relevance: ``layers[0]`` input to
                                                 block 1, ``layers[l]`` output of block ``l``
    ``logit``           ``[B]``                  the explained logit
    ``target``          ``[B]``                  the explained class / next-token id
    ``method``          str                      the method's name
    ``token_types``     ``[B, S]`` or None       BERT token-type embedding share (PA-LRP)
    ``positions_by_layer``  list of ``L [B, S]``  RoPE position relevance per layer (PA-LRP)
    ==================  =======================  ==================================================

    Padding positions have relevance 0.
    """

    tokens: torch.Tensor
    positions: torch.Tensor | None
    layers: list | None
    logit: torch.Tensor
    target: torch.Tensor
    method: str = ""
    token_types: torch.Tensor | None = None
    positions_by_layer: list | None = None
    extras: dict = field(default_factory=dict)

    @property
    def total(self) -> torch.Tensor:
        """``[B]``: sum of all input relevance (tokens + positions + token types)."""
        out = self.tokens.sum(-1)
        for part in (self.positions, self.token_types):
            if part is not None:
                out = out + part.sum(-1)
        return out

    def layer_sums(self) -> torch.Tensor:
        """``[L+1, B]``: the sum of relevance of every residual stream (conservation audit)."""
        return torch.stack([r.sum(-1) for r in self.layers])

    def combined(self) -> torch.Tensor:
        """Display heatmap of Bakish et al. (2025): token relevance + sum over layers of |position
        relevance|, divided by its max |value| per example.  ``[B, S]``."""
        from .positional import combined_heatmap

        return combined_heatmap(self)

    def __len__(self) -> int:
        return self.tokens.shape[0]
