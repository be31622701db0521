"""The result object of :func:`lrp_utils.explain`, and the operations every study needs on it:
selecting examples, assembling batches into one dataset-wide explanation, contrasting two
targets, the combined token + position display map and the conservation gap."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

#: fields that hold one row per example: a tensor ``[B, ...]`` or a list of them (one per layer)
BATCHED = ("tokens", "positions", "layers", "logit", "target", "token_types", "positions_by_layer",
           "heads", "neurons", "heads_by_position", "neurons_by_position", "pixels")


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
    ``heads``           list of ``L [B, H]``     relevance of each head's output (``latents=True``)
    ``neurons``         list of ``L [B, F]``     relevance of each MLP neuron (``latents=True``)
    ``heads_by_position``  list of ``L [B, S, H]``  the same per position (``latents="positions"``)
    ``neurons_by_position``  list of ``L [B, S, F]``  (``latents="positions"``)
    ``pixels``          ``[B, H, W]`` or None    relevance at the pixel input (vision models)
    ``extras``          dict                     anything else (e.g. a contrast target)
    ==================  =======================  ==================================================

    Padding positions have relevance 0.  ``exp[i]`` / ``exp[rows]`` select examples (keeping the
    batch axis); :meth:`assemble` puts per-batch explanations back into one ``[n, S]`` object.
    """

    tokens: torch.Tensor
    positions: torch.Tensor | None
    layers: list | None
    logit: torch.Tensor
    target: torch.Tensor
    method: str = ""
    token_types: torch.Tensor | None = None
    positions_by_layer: list | None = None
    heads: list | None = None
    neurons: list | None = None
    heads_by_position: list | None = None
    neurons_by_position: list | None = None
    pixels: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    # -- sums ---------------------------------------------------------------------------------
    @property
    def total(self) -> torch.Tensor:
        """``[B]``: sum of all input relevance (tokens + positions + token types)."""
        out = self.tokens.sum(-1)
        for part in (self.positions, self.token_types):
            if part is not None:
                out = out + part.sum(-1)
        return out

    @property
    def delta(self) -> torch.Tensor:
        """``[B]``: conservation gap ``total - logit`` (0 for an exactly conservative method; what
        biases and the softmax's Taylor terms absorb otherwise, with the opposite sign)."""
        return self.total - self.logit.to(self.total.dtype)

    def layer_sums(self) -> torch.Tensor:
        """``[L+1, B]``: the sum of relevance of every residual stream (conservation audit)."""
        if self.layers is None:
            raise ValueError(f"method {self.method!r} returned no per-layer relevance (for 'ig' pass "
                             "ig_layers=True to explain())")
        return torch.stack([r.sum(-1) for r in self.layers])

    def combined(self) -> torch.Tensor:
        """Display heatmap of Bakish et al. (2025): token relevance + sum over layers of |position
        relevance|, divided by its max |value| per example.  ``[B, S]``.  For display only:
        conservation checks use the signed, un-normalised ``tokens`` and ``positions``."""
        heat = self.tokens + self.position_magnitude()
        scale = heat.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(heat.dtype).tiny)
        return heat / scale

    def position_magnitude(self) -> torch.Tensor:
        """``[B, S]``: the positional term of :meth:`combined`, ``sum_l |R_pos,l|`` (zeros when the
        method gives positions no relevance)."""
        pos = self.positions_by_layer or ([self.positions] if self.positions is not None else [])
        return sum((p.abs() for p in pos), torch.zeros_like(self.tokens))

    # -- rows -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, rows) -> "Explanation":
        """The examples ``rows`` (an int keeps a batch axis of 1; slices, index and bool tensors)."""
        rows = [rows] if isinstance(rows, int) else rows
        return self._map(lambda t: t[rows])

    def _map(self, fn) -> "Explanation":
        def apply(x):
            if x is None:
                return None
            return [fn(t) for t in x] if isinstance(x, list) else fn(x)

        return replace(self, **{k: apply(getattr(self, k)) for k in BATCHED}, extras=dict(self.extras))

    def contrast(self, other: "Explanation") -> "Explanation":
        """Explanation of the logit *difference* ``logit_self - logit_other`` from two explanations of
        the same inputs with the same method (e.g. the tokens " positive" and " negative" of a
        causal LM).  Modified-gradient relevance is linear in the output seed (the forward pass,
        hence every rule's local factor, does not depend on the target), so the relevance of the
        difference is the difference of the relevances, field by field.  ``target`` keeps this
        one's; the other target is in ``extras["contrast_target"]``."""
        if self.tokens.shape != other.tokens.shape or self.method != other.method:
            raise ValueError("contrast needs two explanations of the same inputs with the same method")

        def diff(x, y):
            if x is None or y is None:
                return None
            return [u - v for u, v in zip(x, y)] if isinstance(x, list) else x - y

        out = replace(self, **{k: diff(getattr(self, k), getattr(other, k)) for k in BATCHED if k != "target"})
        out.extras = {**self.extras, "contrast_target": other.target}
        return out

    @classmethod
    def assemble(cls, parts, shape) -> "Explanation":
        """One explanation ``[n, S]`` from per-batch ones: ``parts`` is a list of ``(rows, cols,
        exp)`` with ``rows`` a LongTensor of example indices and ``cols`` the column slice the
        batch was cropped to (see :func:`lrp_utils.runner.length_batches`).  Per-position fields
        are placed at ``[rows, cols]`` (0 elsewhere, i.e. at padding), per-example fields at
        ``rows``; everything is float64 except ``target``."""
        n, S = shape
        first = parts[0][2]
        per_pos = ("tokens", "positions", "token_types", "layers", "positions_by_layer",
                   "heads_by_position", "neurons_by_position")

        def place(get, per_position):
            x0 = get(first)
            if x0 is None:
                return None
            full = torch.zeros((n, S, *x0.shape[2:]) if per_position else (n, *x0.shape[1:]),
                               dtype=torch.long if x0.dtype == torch.long else torch.float64)
            for rows, cols, e in parts:
                x = get(e)
                full[(rows, cols) if per_position else rows] = x.to(full.dtype)
            return full

        def build(name):
            x0, per_position = getattr(first, name), name in per_pos
            if isinstance(x0, list):
                return [place(lambda e, j=j: getattr(e, name)[j], per_position) for j in range(len(x0))]
            return place(lambda e: getattr(e, name), per_position)

        return cls(**{k: build(k) for k in BATCHED}, method=first.method, extras={})


def _check_fields():  # keep BATCHED in step with the dataclass
    names = {f.name for f in fields(Explanation)} - {"method", "extras"}
    assert names == set(BATCHED), names


_check_fields()
