"""Shared fixtures: seeds and tiny models (float64, O(1) weights so that methods differ)."""
from __future__ import annotations

import pytest
import torch
from archs import ARCHS, VISION_ARCHS, arch_model, tiny  # noqa: F401 (re-exported for the test modules)

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


#: a small random model per text class name of ``lrp_utils.adapters._REGISTRY`` (every architecture;
#: the vision classes are tested with pixel inputs in test_vision.py)
REGISTERED_MODELS = {"TinyTransformer": lambda: tiny(task="causal", position="rotary", n_kv_heads=2),
                     **{type(build()).__name__: (lambda k=k: arch_model(k)) for k, build in ARCHS.items()}}
VISION_CLASSES = {type(build()).__name__ for build in VISION_ARCHS.values()}


@pytest.fixture(params=HF_KINDS)
def hf(request):
    return hf_model(request.param)


@pytest.fixture
def left_padded_ids():
    """A batch of 3 sequences of length 9, the last two left-padded (mask 0)."""
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    return ids, mask


@pytest.fixture
def padded_ids():
    """A batch of 3 sequences of length 9, the last two right-padded (mask 0)."""
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    return ids, mask


# -- tasks (tests of lrp_utils.tasks, perturbation, studies.positional) ---------------------------
TASK_MODELS = {
    "tiny-learned": lambda: tiny(position="learned"),
    "tiny-rotary-causal": lambda: tiny(position="rotary", task="causal", n_kv_heads=2),
    "tiny-linear": lambda: tiny(attention="linear", order="q(kv)", feature_map="elu1", normalize=True),
    "bert": lambda: hf_model("bert"),
    "llama": lambda: hf_model("llama"),
}


def is_causal(model) -> bool:
    from lrp_utils.adapters import get_adapter

    return get_adapter(model).task == "causal"


def random_task(model, n=6, S=9, seed=0, causal=None):
    """A right-padded :class:`lrp_utils.tasks.Task` of random ids (lengths S, 4, 7, S, 5, 6);
    ``valid`` excludes padding and the read-out position (last token if causal, else the first)."""
    from lrp_utils.tasks import Task

    causal = is_causal(model) if causal is None else causal
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, model.config.vocab_size, (n, S), generator=g)
    lengths = torch.tensor([S, 4, 7, S, 5, 6][:n])
    mask = (torch.arange(S)[None] < lengths[:, None]).long()
    valid = mask.bool().clone()
    valid[torch.arange(n), (lengths - 1) if causal else torch.zeros(n, dtype=torch.long)] = False
    return Task("t", ids, mask, valid, tokens=[["x"] * int(L) for L in lengths])


def close(a, b, rel, scale=None):
    """``max |a - b| <= rel * scale`` (default scale: max |b|)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    scale = scale if scale is not None else max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= rel * scale, f"max diff {float((a - b).abs().max()):.3e}"
