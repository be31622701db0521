"""captum-style attribution classes: the LRP methods of :func:`lrp_utils.explain` behind captum's
``Attribution`` interface, for code and tools written against captum.

=====================  ===========================  ==============================================
class                  method                       attributions ``[B, S, D]``
=====================  ===========================  ==============================================
``AttnLRP(model)``     ``"attnlrp"``                relevance of the word embeddings, per feature
``CPLRP(model)``       ``"cp-lrp"``                 (``.sum(-1)`` equals ``explain(...).tokens``)
``PALRP(model)``       ``"pa-lrp"``
``LayerAttnLRP``,      the same, at a residual      relevance of the residual stream ``layer``
``LayerCPLRP``,        stream                       (``.sum(-1)`` equals ``explain(...).layers[l]``)
``LayerPALRP``
=====================  ===========================  ==============================================

captum's conventions: ``attribute(inputs, target=None, additional_forward_args=None,
return_convergence_delta=False)``; ``inputs`` are token ids ``[B, S]``; ``additional_forward_args``
is the attention mask ``[B, S]`` (or a tuple starting with it); ``target`` an int or one per
example (None: the model's argmax).  One forward and one backward pass per call, as ``explain``.
The convergence delta is ``sum of attributions - explained logit`` per example: 0 for an exactly
conservative explanation, otherwise what biases and the softmax's Taylor terms absorb (and, for
PA-LRP, the positional encodings' share, which is not in the word-embedding attributions).
"""
from __future__ import annotations

import torch
from captum.attr import Attribution, LayerAttribution

from . import checks
from .adapters import get_adapter
from .methods import get_method

__all__ = ["AttnLRP", "CPLRP", "PALRP", "LayerAttnLRP", "LayerCPLRP", "LayerPALRP"]


def _mask(additional_forward_args):
    """The attention mask out of captum's ``additional_forward_args`` (None, a mask, or a tuple /
    list whose first entry is the mask)."""
    args = additional_forward_args
    if isinstance(args, (tuple, list)):
        if len(args) > 1:
            raise ValueError("additional_forward_args: only the attention mask is accepted, got "
                             f"{len(args)} arguments")
        args = args[0] if args else None
    return args


class _LRPAttribution(Attribution):
    """Shared parts: ``forward_func(inputs, attention_mask=None) -> logits [B, n_out]`` at the
    read-out (what the explained logit is taken from)."""

    method = "attnlrp"

    def __init__(self, model):
        self.model = model
        self.adapter = get_adapter(model)
        Attribution.__init__(self, self._forward)

    def _forward(self, inputs, attention_mask=None) -> torch.Tensor:
        ids, mask = self.adapter.check_inputs(inputs, attention_mask)
        with checks.frozen(self.adapter.all_modules):
            return self.adapter.forward(ids, mask)

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return True

    def _key(self):
        return "tokens"

    def attribute(self, inputs, target=None, additional_forward_args=None, return_convergence_delta=False):
        """Attributions ``[B, S, D]`` (float, on the device of ``inputs``) and, with
        ``return_convergence_delta``, the delta ``[B]`` (see module docstring)."""
        from .engine import _explain

        ids, mask = self.adapter.check_inputs(inputs, _mask(additional_forward_args))
        tgt = checks.per_example(target, len(ids))
        m, key = get_method(self.method), self._key()
        checks.grad_allowed()
        with self.adapter.session(m), torch.enable_grad():
            exp = _explain(self.adapter, m, ids, mask, tgt, features=(key,))
        attr = exp.extras["features"][key].to(inputs.device)
        if not return_convergence_delta:
            return attr
        return attr, attr.flatten(1).sum(1) - exp.logit.to(attr)

    def compute_convergence_delta(self, attributions, inputs, target=None, additional_forward_args=None):
        """``attributions.sum() - logit`` per example ``[B]``; the explained logit of ``target``
        (None: the argmax) comes from one forward pass."""
        with torch.no_grad():
            logits = self.forward_func(inputs, _mask(additional_forward_args))
        tgt = checks.resolve_target(logits, checks.per_example(target, len(logits)), self.adapter.target_kind)
        logit = logits.gather(1, tgt[:, None])[:, 0]
        return attributions.flatten(1).sum(1) - logit.to(attributions)


class AttnLRP(_LRPAttribution):
    """AttnLRP (Achtibat et al. 2024) at the word embeddings, captum-style (module docstring)."""

    method = "attnlrp"


class CPLRP(_LRPAttribution):
    """CP-LRP (Ali et al. 2022, AH + LN rules) at the word embeddings, captum-style."""

    method = "cp-lrp"


class PALRP(_LRPAttribution):
    """PA-LRP (Bakish et al. 2025) at the word embeddings, captum-style; the positional encodings'
    relevance is not in the attributions (see ``explain(..., "pa-lrp").positions``)."""

    method = "pa-lrp"


class _LayerLRP(_LRPAttribution, LayerAttribution):
    """At a residual stream: ``layer`` an int ``l`` in ``[0, L]`` (``0`` = input of block 1, ``l`` =
    output of block ``l``, as ``Explanation.layers``) or a block module (its output; its input with
    ``attribute_to_layer_input=True``)."""

    def __init__(self, model, layer, attribute_to_layer_input: bool = False):
        _LRPAttribution.__init__(self, model)
        self.layer, self.device_ids = layer, None
        blocks = self.adapter.blocks
        if isinstance(layer, torch.nn.Module):
            index = next((i for i, b in enumerate(blocks) if b is layer), None)
            if index is None:
                raise ValueError("layer must be one of the model's blocks (or an integer residual-stream index)")
            self.index = index if attribute_to_layer_input else index + 1
        else:
            if attribute_to_layer_input:
                raise ValueError("attribute_to_layer_input needs a block module as layer, not an index")
            self.index = checks.integer("layer", layer, 0, len(blocks))

    def _key(self):
        return self.index


class LayerAttnLRP(_LayerLRP):
    """AttnLRP relevance of one residual stream ``[B, S, D]``, captum-style."""

    method = "attnlrp"


class LayerCPLRP(_LayerLRP):
    """CP-LRP relevance of one residual stream ``[B, S, D]``, captum-style."""

    method = "cp-lrp"


class LayerPALRP(_LayerLRP):
    """PA-LRP relevance of one residual stream ``[B, S, D]``, captum-style."""

    method = "pa-lrp"
