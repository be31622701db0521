"""Shared fixtures: seeds and tiny models (float64, O(1) weights so that methods differ)."""
from __future__ import annotations

import pytest
import torch
from archs import ARCHS, arch_model, tiny  # noqa: F401 (re-exported for the test modules)

torch.set_num_threads(1)  # tiny models: threading overhead dominates


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def hf_model(kind: str):
    """Tiny random float64 HF models: "bert", "gpt2", "llama" (grouped-query attention) and every
    other entry of :data:`archs.ARCHS`."""
    return arch_model(kind)


HF_KINDS = ["bert", "gpt2", "llama"]
#: every Hugging Face architecture of the test zoo (classifiers and LMs)
ALL_KINDS = list(ARCHS)


@pytest.fixture(params=HF_KINDS)
def hf(request):
    return hf_model(request.param)


@pytest.fixture
def padded_ids():
    """A batch of 3 sequences of length 9, the last two right-padded (mask 0)."""
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    return ids, mask
