"""Load a model you bring: a local Hugging Face checkpoint folder, by path, offline.

A checkpoint folder is what ``model.save_pretrained(path)`` (and ``tokenizer.save_pretrained``)
writes: ``config.json`` (whose ``architectures`` names the class, e.g. ``"Qwen2ForCausalLM"``),
the weights (``model.safetensors``) and the tokenizer files.  :func:`load_local` reads the class
from the config, refuses classes ``lrp_utils`` cannot explain (listing the supported ones), and
returns the model in eval mode with its tokenizer.
"""
from __future__ import annotations

from pathlib import Path

import torch


def load_local(path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               attn_implementation: str | None = None):
    """``(model, tokenizer)`` from the checkpoint folder ``path`` (``tokenizer`` is None when the
    folder has none, e.g. a vision model).

    Args:
        path: folder with ``config.json`` and the weights (nothing is downloaded).
        dtype: float type of the weights in memory (``torch.float64`` for exactness checks).
        device: where the model lives.
        attn_implementation: ``"sdpa"`` / ``"eager"`` (default: transformers' choice); explanations
            route attention through lrp_utils' own function either way.
    Raises:
        FileNotFoundError: no ``config.json`` in ``path``.
        TypeError: the checkpoint's class is not supported (the message lists the supported classes
            and how to map a class built from the same parts with ``register_adapter``).
    """
    import transformers

    from ..adapters import family_of_name, supported

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a checkpoint folder (no config.json); save one with "
                                "model.save_pretrained(path)")
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    arch = (config.architectures or [None])[0]
    if arch is None or family_of_name(arch) is None or not hasattr(transformers, arch):
        raise TypeError(f"checkpoint class {arch!r} is not supported; supported: {', '.join(supported())} "
                        "(a class built from the same parts as one of them can be added with "
                        "lrp_utils.adapters.register_adapter(cls, family))")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = getattr(transformers, arch).from_pretrained(path, dtype=dtype, local_files_only=True, **kwargs)
    return model.to(device).eval(), _tokenizer(path)


def _tokenizer(path: Path):
    """The folder's tokenizer, or None if it has no tokenizer files."""
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)
