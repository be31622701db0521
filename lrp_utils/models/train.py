"""A few-line training loop for :class:`TinyTransformer` (classification or next-token)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from ..progress import tqdm


def train(model, input_ids, labels=None, attention_mask=None, epochs=5, lr=3e-3, batch_size=64,
          weight_decay=0.01, seed=0, progress=True):
    """Train ``model`` in place with AdamW and return the list of per-epoch mean losses.

    ``input_ids [N, S]``; ``labels [N]`` for ``task="classify"`` (ignored for ``"causal"``, which
    learns next-token prediction on ``input_ids``); ``attention_mask [N, S]`` (1 = token).
    Deterministic for a fixed ``seed``.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [N, S], got shape {tuple(input_ids.shape)}")
    causal = model.config.task == "causal"
    if not causal and (labels is None or len(labels) != len(input_ids)):
        raise ValueError("a classifier needs one label per example")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    history = []
    for epoch in tqdm(range(epochs), desc="training", disable=not progress):
        order, losses = torch.randperm(len(input_ids), generator=gen), []
        for idx in order.split(batch_size):
            loss = _loss(model, input_ids[idx], None if causal else labels[idx], mask[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        history.append(sum(losses) / len(losses))
    model.eval()
    return history


def _loss(model, ids, labels, mask):
    logits = model(ids, attention_mask=mask)
    if labels is not None:
        return F.cross_entropy(logits, labels)
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)


@torch.no_grad()
def accuracy(model, input_ids, labels, attention_mask=None, batch_size=256) -> float:
    """Fraction of correctly classified examples (classifier models)."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    model.eval()
    hits = sum((model(i, attention_mask=m).argmax(-1) == y).sum().item()
               for i, m, y in zip(input_ids.split(batch_size), mask.split(batch_size), labels.split(batch_size)))
    return hits / len(input_ids)
