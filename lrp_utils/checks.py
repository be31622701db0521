"""Input validation for every entry point (``explain``, ``loo``, the experiment loops, ``run``,
``metrics``, ``viz``), and :func:`frozen`.

Bad input raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong value)
whose message names the parameter and what is allowed; nothing is silently rounded, cast from a
float or clipped.  A low module: it imports only torch and numpy.
"""
from __future__ import annotations

import contextlib
import numbers

import numpy as np
import torch


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def integer(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (bounds optional); bools, floats (even 2.0) and
    strings are refused with a ``TypeError`` naming ``name``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = value.item()
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer in {span}, got {value}")
    return value


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1 (batch sizes, resample counts, ...)."""
    return integer(name, value, low=1)


def unit_interval(name: str, value, open_: bool = True) -> float:
    """``value`` as a float in ``(0, 1)`` (``open_``) or ``[0, 1]``; e.g. a significance level."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    ok = 0 < v < 1 if open_ else 0 <= v <= 1
    if not ok:
        raise ValueError(f"{name} must lie in {'(0, 1)' if open_ else '[0, 1]'}, got {value!r}")
    return v


def layers(values, n_layers: int, name: str = "layers") -> list[int]:
    """A non-empty list of integer layers in ``[0, n_layers]`` (0 = embeddings, ``L`` = last block)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a list of integers, got {values!r}")
    out = [integer(f"{name} entry", v, 0, n_layers) for v in values]
    if not out:
        raise ValueError(f"{name} must not be empty (valid layers: 0 .. {n_layers})")
    return out


def per_example(target, n: int, name: str = "target") -> torch.Tensor | None:
    """The one normalisation of a target: ``None`` stays ``None``; an integer becomes ``[n]``; a
    sequence or tensor of ``n`` integers becomes a CPU LongTensor ``[n]``.  Floats (``1.7``, a
    float tensor), bools and strings are refused: a target is a class index or a token id."""
    if target is None:
        return None
    if isinstance(target, (str, bytes)):
        raise TypeError(f"{name} must be an integer class / token id (or one per example), got the string {target!r}")
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer ids, got a tensor of dtype {target.dtype}")
        t = target.detach().cpu().long().reshape(-1)
    elif _is_int(target):
        t = torch.tensor([int(target)])
    elif hasattr(target, "__iter__"):
        items = list(np.asarray(target).reshape(-1)) if isinstance(target, np.ndarray) else list(target)
        t = torch.tensor([integer(f"{name} entry", v) for v in items], dtype=torch.long)
    else:
        raise TypeError(f"{name} must be an integer class / token id (or one per example), got {target!r} "
                        f"({type(target).__name__})")
    if t.numel() == 1:
        return t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"{name} must be one integer or one per example ({n}), got {t.numel()} values")
    return t


def target_range(target: torch.Tensor, n_out: int, kind: str = "class") -> torch.Tensor:
    """``target`` ``[n]`` after checking every entry lies in ``[0, n_out)``."""
    if int(target.min()) < 0 or int(target.max()) >= n_out:
        raise ValueError(f"target {kind} out of range: must lie in [0, {n_out}), got {target.tolist()}")
    return target


def resolve_target(logits: torch.Tensor, target: torch.Tensor | None, kind: str = "class") -> torch.Tensor:
    """The explained target ``[B]`` on the logits' device: ``target`` (from :func:`per_example`)
    after a range check against ``logits [B, n_out]``, or the argmax when None."""
    if target is None:
        return logits.detach().argmax(-1)
    return target_range(target, logits.shape[1], kind).to(logits.device)


def input_ids(ids, vocab_size: int) -> torch.Tensor:
    """``[B, S]`` LongTensor of token ids (``[S]`` is batch 1; any integer dtype is cast; bool and
    float refused; every id in ``[0, vocab_size)``)."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch tensor of token ids, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
    ids = ids[None] if ids.dim() == 1 else ids
    if ids.dim() != 2 or ids.numel() == 0:
        raise ValueError(f"input_ids must be a non-empty [batch, seq] tensor, got shape {tuple(ids.shape)}")
    ids = ids.long()
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"input_ids must lie in [0, {vocab_size}) (the vocabulary size); got min "
                         f"{int(ids.min())}, max {int(ids.max())}")
    return ids


def model_inputs(modality: str, model_name: str, input_ids, pixel_values):
    """The one input of ``explain``: ``input_ids`` for text models, ``pixel_values`` for vision
    models (``modality == "image"``); the other must be None."""
    if modality == "image":
        if input_ids is not None:
            raise TypeError(f"{model_name} is a vision model: pass images as pixel_values=[batch, channels, "
                            "height, width], not input_ids")
        if pixel_values is None:
            raise TypeError(f"{model_name} is a vision model: pixel_values=[batch, channels, height, width] is required")
        return pixel_values
    if pixel_values is not None:
        raise TypeError(f"pixel_values is only for vision models (ViTForImageClassification); {model_name} "
                        "takes input_ids")
    if input_ids is None:
        raise TypeError(f"input_ids is required for {model_name} (a [batch, seq] tensor of token ids)")
    return input_ids


def pixel_values(x, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """``[B, C, H, W]`` floating images (``[C, H, W]`` is batch 1) with the model's channel count
    and image size ``(H, W)``; finite values."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch tensor of images, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"pixel_values must be a floating tensor, got dtype {x.dtype}")
    x = x[None] if x.dim() == 3 else x
    if x.dim() != 4 or x.shape[0] == 0 or x.shape[1] != channels or tuple(x.shape[2:]) != tuple(size):
        raise ValueError(f"pixel_values must have shape [batch, {channels}, {size[0]}, {size[1]}] (this model's "
                         f"channels and image size), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("pixel_values must be finite (found NaN or inf)")
    return x


def attention_mask(mask, shape: torch.Size) -> torch.Tensor:
    """``[B, S]`` LongTensor of 0 / 1 (``None`` = all tokens).  Accepts bool, integer, or float
    masks whose values are exactly 0 or 1; refuses other values (2, -1, 0.5, NaN), rows without a
    token, and padding in the middle of a row (padding must be on the left or on the right)."""
    if mask is None:
        return torch.ones(shape, dtype=torch.long)
    mask = torch.as_tensor(mask)
    mask = mask[None] if mask.dim() == 1 else mask
    if mask.shape != shape:
        raise ValueError(f"attention_mask shape {tuple(mask.shape)} does not match input_ids shape {tuple(shape)}")
    if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
        bad = mask[~((mask == 0) | (mask == 1))].flatten()[:3].tolist()
        raise ValueError(f"attention_mask values must be 0 or 1 (1 = token, 0 = padding), got {bad}")
    mask = mask.long()
    if (mask.sum(1) == 0).any():
        raise ValueError("attention_mask: every sequence needs at least one token (a row of zeros)")
    steps = (mask[:, 1:] != mask[:, :-1]).sum(1)  # contiguous tokens: at most 2 switches, 1..1 in one run
    inner = (steps > 2) | ((steps == 2) & (mask[:, 0] == 1))
    if inner.any():
        row = int(inner.nonzero()[0])
        raise ValueError(f"attention_mask row {row} has padding between tokens: pad on the left or on "
                         f"the right only ({mask[row].tolist()})")
    return mask


def positions_fit(mask: torch.Tensor, max_positions: int | None, source: str = "the position table") -> None:
    """Refuse inputs with more tokens than a learned / sinusoidal position table holds."""
    if max_positions is None:
        return
    longest = int(mask.long().sum(1).max())
    if longest > max_positions:
        raise ValueError(f"input has {longest} tokens but this model's position table holds {max_positions} "
                         f"({source}); truncate it, e.g. tokenizer(..., truncation=True, max_length={max_positions})")


def grad_allowed() -> None:
    """Relevance needs a backward pass: refuse ``torch.inference_mode()`` with a clear message."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("explain() needs autograd, which torch.inference_mode() switches off; call it "
                           "outside inference mode (inside torch.no_grad() is fine, or with no context)")


@contextlib.contextmanager
def frozen(modules):
    """Eval mode (dropout off) for the duration; every module's own flag is restored afterwards.
    ``modules``: a ``torch.nn.Module`` or an iterable of modules; only those in training mode are
    touched."""
    mods = modules.modules() if isinstance(modules, torch.nn.Module) else modules
    training = [m for m in mods if m.training]
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True
