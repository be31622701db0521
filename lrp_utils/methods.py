"""Explanation methods as declarative maps from operation kind to rule.

A method is a :class:`Method`: one field per kind of operation that needs a rule (see
``rules.py``).  A new method is a new entry in :data:`METHODS`, never new control flow.

Gradient scales (1 = plain gradient, 0.5 = uniform rule, 0 = treated as constant):

* ``qk``    -- into q and k at the score product ``q @ k^T``,
* ``attn``  -- into the attention probabilities at ``A @ V`` (0: the AH-rule of Ali et al.),
* ``value`` -- into V at ``A @ V``.

Other fields: ``act`` (``"grad"`` or ``"identity"`` rule on element-wise nonlinearities), ``gate``
(gated MLP product ``act(gate) * up``: ``"grad"``, ``"uniform"`` or ``"const"`` for a constant
gate as in lxt's CP-LRP), ``norm`` (``"grad"`` or ``"const"``: LayerNorm/RMSNorm scale and the
linear-attention normaliser treated as constants, the LN-rule), ``positions`` (PA-LRP: relevance
for position encodings, Bakish et al. 2025).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Method:
    """One explanation method as a map from operation kind to rule (see module docstring)."""

    name: str
    qk: float = 1.0
    attn: float = 1.0
    value: float = 1.0
    act: str = "grad"
    gate: str = "grad"
    norm: str = "grad"
    positions: bool = False
    doc: str = ""


_GI = Method("gi", doc="Gradient x Input: no rule changes.")
_ATTNLRP = Method(
    "attnlrp", qk=0.5, attn=0.5, value=0.5, act="identity", gate="uniform", norm="const",
    doc="AttnLRP (Achtibat et al. 2024): uniform rule on q@k and A@v, Taylor rule on the softmax "
    "(= plain gradient), identity rule on nonlinearities and normalisation.",
)
_CP = Method(
    "cp-lrp", attn=0.0, act="identity", gate="const", norm="const",
    doc="CP-LRP (Ali et al. 2022, AH+LN): attention probabilities and norm scales constant; "
    "identity rule on nonlinearities, constant gate in gated MLPs (as lxt's cp_LRP).",
)

METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        _GI,
        _CP,
        replace(_CP, name="cp-lrp-ah", norm="grad",
                doc="CP-LRP with the AH-rule only: attention probabilities constant, LayerNorm "
                "scale keeps its gradient (Ali et al. 2022, 'LRP (AH)')."),
        replace(_CP, name="pa-cp-lrp", positions=True,
                doc="CP-LRP plus relevance for position encodings (rotary ones get exactly 0)."),
        _ATTNLRP,
        replace(_ATTNLRP, name="pa-lrp", positions=True,
                doc="PA-LRP (Bakish et al. 2025): AttnLRP plus relevance for position encodings "
                "(additive: split at the embedding sum; rotary: cos/sin as inputs, uniform rule)."),
        replace(_ATTNLRP, name="attnlrp-no-softmax", attn=0.0,
                doc="Ablation: AttnLRP with the softmax path cut (A constant) but the uniform "
                "split at A@V kept, so V receives half of the relevance."),
        replace(_ATTNLRP, name="attnlrp-full-value", value=1.0,
                doc="Ablation: AttnLRP whose value path gets the full relevance as in CP-LRP, "
                "while the softmax path is still propagated with the Taylor rule."),
    ]
}

#: methods that are not modified gradients but are accepted by ``explain``
OTHER_METHODS = {
    "ig": "Integrated Gradients (captum), zero baseline on the token embeddings.",
    "rollout": "Attention rollout (Abnar & Zuidema 2020), heads averaged, residual added.",
    "random": "Uniform random relevance (seeded): the floor for faithfulness metrics.",
}


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name`` (case-insensitive); clear error listing valid names."""
    if isinstance(name, Method):
        return name
    key = str(name).lower()
    if key not in METHODS:
        valid = ", ".join(sorted([*METHODS, *OTHER_METHODS]))
        raise ValueError(f"unknown method {name!r}; valid methods: {valid}")
    return METHODS[key]
