"""lrp_utils.batching.length_batches: every example once, sorted by length, padding cropped."""
from __future__ import annotations

import pytest
import torch

from lrp_utils.batching import length_batches


def _mask(lengths, S, left=False):
    m = torch.zeros(len(lengths), S, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            m[i, S - n:] = 1
        else:
            m[i, :n] = 1
    return m


@pytest.mark.parametrize("left", [False, True])
def test_batches_cover_every_example_once_and_crop_shared_padding(left):
    lengths, S = [5, 2, 7, 3, 2, 6], 9
    mask = _mask(lengths, S, left)
    batches = list(length_batches(mask, 4))
    order = torch.cat([idx for idx, _ in batches])
    assert sorted(order.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in order] == sorted(lengths)  # stable, shortest first
    for idx, cols in batches:
        longest = max(lengths[i] for i in idx)
        assert cols == (slice(S - longest, S) if left else slice(0, longest))
        assert int(mask[idx, cols].sum()) == int(mask[idx].sum())  # no token cropped away


def test_bad_batch_size_is_a_clear_error():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(length_batches(torch.ones(2, 3), 0))
