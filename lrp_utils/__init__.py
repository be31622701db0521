"""lrp_utils: exact, fast Layer-wise Relevance Propagation for transformers.

Public API (see ``DESIGN.md``)::

    from lrp_utils import explain, loo, Explanation
    exp = explain(model, input_ids, method="attnlrp")
    scores = loo(model, input_ids, layer=0)
"""
from .engine import explain
from .explanation import Explanation
from .loo import loo, loo_by_layer
from .methods import METHODS, get_method

__all__ = ["explain", "loo", "loo_by_layer", "Explanation", "METHODS", "get_method"]
__version__ = "0.1.0"
