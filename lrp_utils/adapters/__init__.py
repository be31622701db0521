"""Architecture adapters: :func:`get_adapter` picks the one for a model."""
from __future__ import annotations

from .base import Adapter, Context

_REGISTRY: dict[str, tuple[str, str]] = {
    "TinyTransformer": ("tiny", "TinyAdapter"),
    "BertForSequenceClassification": ("bert", "BertAdapter"),
    "GPT2LMHeadModel": ("gpt2", "GPT2Adapter"),
    "LlamaForCausalLM": ("llama", "LlamaAdapter"),
}

SUPPORTED = tuple(_REGISTRY)


def get_adapter(model) -> Adapter:
    """The adapter for ``model``; a clear error listing the supported classes otherwise."""
    if isinstance(model, Adapter):
        return model
    for cls in type(model).__mro__:
        if cls.__name__ in _REGISTRY:
            module, name = _REGISTRY[cls.__name__]
            mod = __import__(f"{__name__}.{module}", fromlist=[name])
            return getattr(mod, name)(model)
    raise TypeError(
        f"unsupported architecture {type(model).__name__}; supported: {', '.join(SUPPORTED)}"
    )


__all__ = ["Adapter", "Context", "get_adapter", "SUPPORTED"]
