"""Architecture adapters: :func:`get_adapter` picks the one for a model; :func:`register_adapter`
maps a further class onto an existing family."""
from __future__ import annotations

import importlib

from .base import Adapter, Context

#: family -> (module, adapter class)
FAMILIES: dict[str, tuple[str, str]] = {
    "tiny": ("tiny", "TinyAdapter"),
    "bert": ("bert", "BertAdapter"),
    "gpt2": ("gpt2", "GPT2Adapter"),
    "llama": ("llama", "LlamaAdapter"),
    "mistral": ("decoders", "MistralAdapter"),
    "qwen2": ("decoders", "Qwen2Adapter"),
    "qwen3": ("decoders", "Qwen3Adapter"),
    "phi3": ("decoders", "Phi3Adapter"),
    "olmo2": ("decoders", "Olmo2Adapter"),
    "gemma2": ("gemma", "Gemma2Adapter"),
    "gemma3": ("gemma", "Gemma3Adapter"),
    "gpt_neox": ("neox", "GPTNeoXAdapter"),
    "roberta": ("encoders", "RobertaAdapter"),
    "electra": ("encoders", "ElectraAdapter"),
    "distilbert": ("encoders", "DistilBertAdapter"),
    "vit": ("vit", "ViTAdapter"),
}

#: model class name -> family
_REGISTRY: dict[str, str] = {
    "TinyTransformer": "tiny",
    "BertForSequenceClassification": "bert",
    "GPT2LMHeadModel": "gpt2",
    "GPT2ForSequenceClassification": "gpt2",
    "LlamaForCausalLM": "llama",
    "LlamaForSequenceClassification": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen2ForSequenceClassification": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Phi3ForCausalLM": "phi3",
    "Olmo2ForCausalLM": "olmo2",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "GPTNeoXForCausalLM": "gpt_neox",
    "RobertaForSequenceClassification": "roberta",
    "ElectraForSequenceClassification": "electra",
    "DistilBertForSequenceClassification": "distilbert",
    "ViTForImageClassification": "vit",
}
#: the classes supported out of the box (``register_adapter`` adds to :data:`_REGISTRY` only)
BUILTIN: dict[str, str] = dict(_REGISTRY)


def supported() -> tuple[str, ...]:
    """The model classes :func:`get_adapter` accepts (by class name)."""
    return tuple(_REGISTRY)


SUPPORTED = supported()


def register_adapter(model_class, family: str) -> None:
    """Map ``model_class`` (a class or its name) onto an existing family (a key of
    :data:`FAMILIES`, e.g. ``"llama"``, ``"qwen2"``, ``"bert"``): for a class built from the same
    parts under the same attribute names, e.g. a subclass or a renamed copy of
    ``LlamaForCausalLM``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    name = model_class if isinstance(model_class, str) else model_class.__name__
    _REGISTRY[name] = family


def family_of_name(class_name: str) -> str | None:
    """The family registered for a class name, else None."""
    return _REGISTRY.get(class_name)


def family_of(model) -> str | None:
    """The family of ``model``'s class (or of its nearest registered base class), else None."""
    for cls in type(model).__mro__:
        if cls.__name__ in _REGISTRY:
            return _REGISTRY[cls.__name__]
    return None


def get_adapter(model) -> Adapter:
    """The adapter for ``model``; a clear error listing the supported classes otherwise."""
    if isinstance(model, Adapter):
        return model
    family = family_of(model)
    if family is None:
        raise TypeError(f"unsupported architecture {type(model).__name__}; supported: {', '.join(supported())} "
                        "(a class built from the same parts as one of them can be added with "
                        "lrp_utils.adapters.register_adapter(cls, family))")
    module, name = FAMILIES[family]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)(model)


def model_rows():
    """The supported-models table (README): see :func:`lrp_utils.adapters.table.model_rows`."""
    from .table import model_rows as rows

    return rows()


__all__ = ["Adapter", "Context", "get_adapter", "register_adapter", "supported", "SUPPORTED", "FAMILIES",
           "BUILTIN", "model_rows", "family_of_name"]
