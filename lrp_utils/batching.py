"""Length-sorted batches: the one way every experiment loop walks a padded dataset."""
from __future__ import annotations

import torch


def length_batches(attention_mask: torch.Tensor, batch_size: int):
    """Yield ``(indices, columns)``: examples sorted by length (stable), ``batch_size`` at a time,
    and the ``slice`` of columns any of them uses, so padding shared by the whole batch is cropped
    (right padding: ``slice(0, longest)``; left padding: the last ``longest`` columns).

    ``attention_mask [n, S]`` (1 = token); ``indices`` is a CPU LongTensor.  Index a batch as
    ``input_ids[indices, columns]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    m = attention_mask.bool().cpu()
    for idx in torch.argsort(m.sum(1), stable=True).split(batch_size):
        used = m[idx].any(0).nonzero()[:, 0]
        yield idx, slice(int(used[0]), int(used[-1]) + 1) if len(used) else slice(0, 0)
