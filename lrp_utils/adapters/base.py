"""What the engine needs to know about an architecture, in one small class per model family.

An adapter runs a model as ``embed -> block 1 .. block L -> readout`` so that the engine can read
every residual stream and leave-one-out can restart from any layer.  It also says which modules
need a rule (norms, activations, gated products) and routes them, reversibly and only for the
duration of a call, into the one interpreter of a method, :mod:`lrp_utils.ops`.

Everything architecture-specific lives here and in the family modules: the read-out (position and
head), position ids, masks, the layer count, the size of the position table, target names.

Shapes: ``input_ids, attention_mask, position_ids [B, S]``; hidden states ``[B, S, D]``;
``keep [B, 1, S, S]`` boolean (True = query i may read key j), an extra mask used by LOO;
``readout`` returns ``[B, n_out]``.

What leave-one-out's reuse (:mod:`lrp_utils.reuse`: decoders recompute a removal only from the
removed position on, reading the earlier positions' keys and values from the unperturbed pass; the
last block computes only the read-out position) needs from an adapter:

1. every block makes exactly one attention call, through :func:`lrp_utils.ops.softmax_attention`
   (Hugging Face models: through the attention function :class:`~lrp_utils.adapters.hf.HFAdapter`
   registers), passing its attention module as ``module``.  Checked at run time: a model whose
   blocks make another number of such calls gets the plain path.
2. ``query_subsets = True``: ``block(i, h, ctx, keep)`` accepts the hidden states
   ``h [n, Sq, D]`` of some positions only, ``ctx.queries [n, Sq]`` (the keys are positions
   ``0 .. Sk-1``, ``Sk`` = ``ctx.attention_mask.shape[1]``): it reads position ids and RoPE tables
   from ``ctx`` (already gathered at the queries by :meth:`Context.at`), builds its mask with
   ``masks.dense_keep(ctx.attention_mask, causal, keep, ctx.queries)`` (``HFAdapter.mask`` does;
   ``keep [n, 1, Sq, Sk]``), and everything outside attention acts on each position alone.
   ``HFAdapter`` sets it; an adapter whose blocks cannot do this sets it to False.
3. ``single_readout`` (default True): ``readout`` reads only the state at ``readout_positions``.
4. optional, for speed: ``head``, the read-out's last ``nn.Linear`` when it receives all that the
   read-out computes (an LM head: LOO then takes only the target's row of it); anything element-wise
   after it goes in ``head_output`` (Gemma's logit soft-capping).

New per-position tensors a block needs go into :class:`Context` as ``[B, S, ...]`` fields (they
are then gathered for query subsets).  Adapters that do not meet 1-3 get the plain path (every
removal runs all positions of the remaining blocks), with the same numbers.  The test
``test_reuse_equals_plain_path_and_brute_force`` runs on every registered class
(``tests/conftest.py: REGISTERED_MODELS``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import nn

from .. import checks, masks, ops
from ..methods import Method


@dataclass
class Context:
    """Per-batch tensors shared by all blocks: padding mask, position ids, RoPE tables (a tuple;
    ``(cos, sin)``, or more tables for models with several, see :meth:`Adapter.layer_rope`), token
    types, and for vision models the pixel input ``[B, C, H, W]`` (a leaf under ``explain``).

    ``attention_mask [B, Sk]`` is the padding mask of the keys.  Every other tensor (``[B, S]``,
    ``[B, S, ...]`` or a tuple of them) is per position of the hidden states a block receives, except
    ``pixels`` (per example).  ``queries [B, Sq]``, when set, says which positions those hidden states
    are (a pass over a subset of positions, see :meth:`at`); None: all ``Sk`` positions, in order."""

    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    rope: tuple | None = None
    token_type_ids: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    queries: torch.Tensor | None = None

    def _map(self, fn, mask_fn, row_fn) -> "Context":
        """A copy with ``fn`` applied to every per-position tensor, ``mask_fn`` to the key mask and
        ``row_fn`` to the per-example ``pixels``."""
        def apply(t):
            if isinstance(t, torch.Tensor):
                return fn(t)
            return type(t)(apply(x) for x in t) if isinstance(t, (tuple, list)) else t
        new = {f.name: apply(getattr(self, f.name)) for f in dataclasses.fields(self)
               if f.name not in ("attention_mask", "queries", "pixels")}
        pixels = None if self.pixels is None else row_fn(self.pixels)
        return dataclasses.replace(self, attention_mask=mask_fn(self.attention_mask), pixels=pixels, **new)

    def select(self, index: torch.Tensor) -> "Context":
        """Rows ``index`` of every batched tensor (for LOO's expanded batches)."""
        ctx = self._map(lambda t: t[index], lambda m: m[index], lambda p: p[index])
        return dataclasses.replace(ctx, queries=self.queries[index] if self.queries is not None else None)

    def at(self, rows: torch.Tensor, queries: torch.Tensor, n_keys: int) -> "Context":
        """The context of a pass over some positions only: rows ``rows [n]`` of this (full) batch,
        hidden states at the positions ``queries [n, Sq]``, keys at positions ``0 .. n_keys-1``
        (per-position tensors gathered at ``queries``, the key mask cut to ``n_keys``)."""
        ctx = self._map(lambda t: t[rows[:, None], queries], lambda m: m[rows, :n_keys], lambda p: p[rows])
        return dataclasses.replace(ctx, queries=queries)


class Adapter:
    """Base class; subclasses fill in the architecture facts."""

    name = "base"
    task = "classify"  # "classify" (class logits) or "causal" (next-token logits)
    causal = False  # causal self-attention (decoders); decides the read-out position too
    positions = None  # None, "additive" or "rotary"
    rotary_dims = None  # partial rotary: features of each q/k head that RoPE rotates (None: all)
    modality = "text"  # "text" (input_ids) or "image" (pixel_values)
    query_subsets = False  # block() runs on a subset of positions (see the module docstring)
    single_readout = True  # readout() reads the state at readout_positions() only
    #: the read-out's final linear map, when all it reads is its input (LOO then computes only the
    #: target's logit: ``x . W[target]`` instead of every row of a language-model head); or None
    head: nn.Module | None = None

    def __init__(self, model: nn.Module):
        self.model = model

    # -- architecture facts -------------------------------------------------------------------
    @functools.cached_property
    def all_modules(self) -> list[nn.Module]:
        """Every module of the model, scanned once per adapter (an adapter lives for one call)."""
        return list(self.model.modules())

    @property
    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def word_embeddings(self) -> nn.Embedding:
        raise NotImplementedError

    @property
    def n_outputs(self) -> int:
        raise NotImplementedError

    @property
    def max_positions(self) -> int | None:
        """Size of a learned / fixed position table (None: no limit, e.g. rotary positions)."""
        return None

    @property
    def dtype(self) -> torch.dtype:
        return self.word_embeddings.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.word_embeddings.weight.device

    def readout_positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Index ``[B]`` of the position whose state is read out (LOO gives it NaN): the last token
        of a decoder (causal LM or decoder classifier), the first token ([CLS]) of an encoder."""
        return masks.last_positions(attention_mask) if self.causal else masks.first_positions(attention_mask)

    @property
    def target_kind(self) -> str:
        """What a target is, for messages: ``"class"`` or ``"token id"``."""
        return "class" if self.task == "classify" else "token id"

    def position_ids(self, attention_mask: torch.Tensor) -> torch.Tensor:
        return masks.position_ids(attention_mask)

    def target_name(self, tokenizer, target: int) -> str:
        """A readable name of an explained output: the class label or the quoted token."""
        if self.task == "causal":
            return repr(tokenizer.decode([int(target)])) if tokenizer is not None else str(int(target))
        labels = getattr(getattr(self.model, "config", None), "id2label", None) or {}
        return str(labels.get(int(target), int(target)))

    @functools.cached_property
    def _block_of(self) -> dict:
        return {id(m): i for i, blk in enumerate(self.blocks) for m in blk.modules()}

    def block_index(self, module) -> int | None:
        """Index of the block ``module`` belongs to (None: embeddings or read-out)."""
        return self._block_of.get(id(module))

    # -- latent units: attention heads and MLP neurons (explain(latents=...), lrp_utils.latents) ---
    @property
    def n_heads(self) -> int:
        """Query heads per block: the attention output projection's input ``[B, S, H * head_dim]``
        splits into ``H`` equal slices, head ``h`` at ``h * head_dim .. (h + 1) * head_dim``."""
        raise NotImplementedError(f"the {self.name!r} adapter does not expose attention heads")

    def latent_modules(self) -> list[tuple[nn.Module, nn.Module | None]]:
        """Per block ``(attention output projection, MLP output projection or None)``.  Their
        *inputs* are the latent units: the concatenated head outputs ``[B, S, H * head_dim]`` and
        the MLP neurons ``[B, S, d_ff]`` (after the nonlinearity or gate product, as the projection
        consumes them).  Both projections must be linear maps of that input (``x W^T (+ b)``)."""
        raise NotImplementedError(f"the {self.name!r} adapter does not expose latent units")

    def biased_linears(self) -> list[nn.Module]:
        """Modules computing ``x W^T + b`` with a bias ``b`` (the audit's bias term)."""
        return [m for m in self.all_modules if isinstance(m, nn.Linear) and m.bias is not None]

    # -- input checks ---------------------------------------------------------------------------
    def check_inputs(self, input_ids, attention_mask):
        """Validated ``(input_ids, attention_mask)`` ``[B, S]`` on the model's device (see
        :mod:`lrp_utils.checks`)."""
        ids = checks.input_ids(input_ids, self.word_embeddings.num_embeddings)
        mask = checks.attention_mask(attention_mask, ids.shape)
        checks.positions_fit(mask, self.max_positions)
        if self.dtype == torch.float16 and self.device.type == "cpu":
            raise TypeError("float16 models are not supported on CPU (half-precision matmuls there are "
                            "slow and inexact); use model.float(), model.to(torch.bfloat16) or a GPU")
        return ids.to(self.device), mask.to(self.device)

    # -- the forward pass in pieces -----------------------------------------------------------
    def prepare(self, input_ids, attention_mask, position_ids=None) -> Context:
        pos = self.position_ids(attention_mask) if position_ids is None else position_ids
        return Context(attention_mask, pos)

    def embed_parts(self, input_ids, ctx: Context) -> dict:
        """``{"tokens": [B,S,D], "positions": [B,S,D] | None, "types": [B,S,D] | None}``."""
        raise NotImplementedError

    def combine(self, parts: dict) -> torch.Tensor:
        """The input of block 1 from the embedding parts (default: their sum)."""
        h = parts["tokens"]
        for key in ("types", "positions"):
            if parts.get(key) is not None:
                h = h + parts[key]
        return h

    def block(self, index: int, h, ctx: Context, keep=None, rope=None) -> torch.Tensor:
        raise NotImplementedError

    def readout(self, h, ctx: Context, removed=None) -> torch.Tensor:
        """Logits ``[B, n_out]``; ``removed [B, S]`` marks positions LOO removed (only a mean
        read-out needs it)."""
        raise NotImplementedError

    def head_output(self, logits: torch.Tensor) -> torch.Tensor:
        """What the read-out does after :attr:`head` (default: nothing; Gemma soft-caps the logits).
        Element-wise, so LOO may apply it to the target's logit alone."""
        return logits

    def readout_at(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``[n, n_out]`` from the read-out states ``h [n, D]`` alone (``single_readout``)."""
        one = torch.ones(h.shape[0], 1, dtype=torch.long, device=h.device)
        return self.readout(h[:, None], Context(one, one - 1))

    def rope_tables(self, h, ctx: Context):
        """``(cos, sin)`` ``[B, S, head_dim]`` for rotary models, else None."""
        return None

    def layer_rope(self, index: int, ctx: Context):
        """``(cos, sin)`` of block ``index`` (default: the context's one pair; models whose layer
        types use different RoPE bases pick theirs).  PA-LRP gives each block its own copy."""
        return ctx.rope

    def start(self, input_ids, attention_mask, position_ids=None, parts: dict | None = None,
              leaves: bool = False):
        """The prefix every pass shares: ``(parts, h0, ctx)``: the embedding parts (``parts``
        overrides some of them, e.g. the token embeddings IG integrates over; ``leaves``: detached
        copies that require grad, the inputs of an explanation; absent parts dropped), their
        combination ``h0`` (input of block 1) and the context with RoPE tables."""
        ctx = self.prepare(input_ids, attention_mask, position_ids)
        parts = {**self.embed_parts(input_ids, ctx), **(parts or {})}
        if leaves:
            parts = {k: v.detach().requires_grad_() for k, v in parts.items() if v is not None}
        h = self.combine(parts)
        ctx.rope = self.rope_tables(h, ctx)
        return parts, h, ctx

    def run(self, h, ctx: Context, begin: int = 0, end: int | None = None, keep=None, ropes=None,
            states: list | None = None, checkpoint: bool = False) -> torch.Tensor:
        """Blocks ``begin+1 .. end`` (default: to the last) on ``h``; ``states`` (a list) collects
        every block's output; ``ropes``: per-layer ``(cos, sin)`` (PA-LRP's leaves); ``checkpoint``
        recomputes each block in the backward pass (``torch.utils.checkpoint``)."""
        for i in range(begin, self.n_layers if end is None else end):
            rope = ropes[i] if ropes else None
            if checkpoint:
                h = torch.utils.checkpoint.checkpoint(self._block_fn(i, ctx, keep), h, rope, use_reentrant=False)
            else:
                h = self.block(i, h, ctx, keep=keep, rope=rope)
            if states is not None:
                states.append(h)
        return h

    def _block_fn(self, index, ctx, keep):
        return lambda h, rope: self.block(index, h, ctx, keep=keep, rope=rope)

    def forward(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        """Read-out logits ``[B, n_out]`` through the pieces (equals the model's own output);
        ``position_ids`` overrides the positions counted from the mask (a shortened sequence that
        keeps its tokens' original positions)."""
        _, h, ctx = self.start(input_ids, attention_mask, position_ids)
        return self.readout(self.run(h, ctx), ctx)

    # -- rules ----------------------------------------------------------------------------------
    def norm_modules(self) -> list[nn.Module]:
        return []

    def activation_modules(self) -> list[nn.Module]:
        return []

    def gate_modules(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(activation of the gate, module that consumes act(gate) * up)`` pairs."""
        return []

    def norm_params(self, module) -> tuple:
        """``(weight | None, eps, center)`` of a norm module (``center``: LayerNorm, not RMSNorm)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def rules(self):
        """Route the labelled modules (norms, activations, gates) into :mod:`lrp_utils.ops`, which
        applies the active session's method; always removes the hooks on exit."""
        handles = []
        try:
            handles += [m.register_forward_hook(self._norm_hook) for m in self.norm_modules()]
            handles += [m.register_forward_hook(_act_hook) for m in self.activation_modules()]
            for act, consumer in self.gate_modules():
                handles += [act.register_forward_pre_hook(_gate_in_hook), act.register_forward_hook(_gate_act_hook),
                            consumer.register_forward_pre_hook(_gate_product_hook)]
            with self.attention_function():
                yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def session(self, method: Method, **session_kwargs):
        """Everything one call needs, reversibly: eval mode, the rules routed into
        :mod:`lrp_utils.ops`, and an ops session with ``method`` (``on_attention=...`` passes on)."""
        rotary = method.positions and self.positions == "rotary"
        with checks.frozen(self.all_modules), self.rules(), \
                ops.session(method, rotary_positions=rotary, rotary_dims=self.rotary_dims, **session_kwargs) as s:
            yield s

    def _norm_hook(self, module, inputs, output):
        return ops.norm_out(inputs[0], output, *self.norm_params(module))

    @contextlib.contextmanager
    def attention_function(self):
        """Route attention through :func:`lrp_utils.ops.softmax_attention` (HF models)."""
        yield


def _act_hook(module, inputs, output):
    return ops.act_out(inputs[0], output)


def _gate_in_hook(module, args):
    return (ops.gate_in(args[0]), *args[1:])


def _gate_act_hook(module, inputs, output):
    return ops.gate_act(inputs[0], output)


def _gate_product_hook(module, args):
    return (ops.gate_product(args[0]), *args[1:])
