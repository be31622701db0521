"""Oracle c: our `attnlrp` / `cp-lrp` equal lxt 2.1 (efficient mode) on small random HF models.

The reference numbers were produced by ``tests/fixtures/make_lxt_fixtures.py`` in a separate
environment (lxt needs transformers<5) and committed as package data (``lrp_utils/lxt/fixtures``);
here they are compared with our engine on the same weights and inputs under transformers 5.  lxt
has no CP-LRP map for BERT.
"""
from __future__ import annotations

import pytest
import torch
from tolerances import LXT_MAX_REL_ERR, LXT_MIN_COSINE

from lrp_utils import explain
from lrp_utils.lxt import NAMES, fixture_path, load_fixture

CASES = [(name, method) for name in NAMES for method in torch.load(fixture_path(name), weights_only=True)["relevance"]]


@pytest.mark.parametrize("name, method", CASES)
def test_equals_lxt(name, method):
    model, fix = load_fixture(name)
    exp = explain(model, fix["input_ids"], method, target=fix["target"],
                  attention_mask=fix["attention_mask"])
    ours, ref = exp.tokens.flatten(), fix["relevance"][method].flatten().to(exp.tokens.dtype)
    cosine = torch.nn.functional.cosine_similarity(ours, ref, dim=0)
    max_err = (ours - ref).abs().max() / ref.abs().max()
    assert cosine >= LXT_MIN_COSINE and max_err <= LXT_MAX_REL_ERR, (float(cosine), float(max_err))
    torch.testing.assert_close(exp.logit, fix["logit"].to(exp.logit.dtype), rtol=1e-9, atol=1e-9)


def test_fixtures_discriminate_methods():
    """The fixtures are sensitive: attnlrp and cp-lrp differ clearly on them (the test can fail)."""
    model, fix = load_fixture("gpt2")
    a = fix["relevance"]["attnlrp"].flatten()
    c = explain(model, fix["input_ids"], "cp-lrp", target=fix["target"]).tokens.flatten()
    assert (a - c).abs().max() / a.abs().max() > 100 * LXT_MAX_REL_ERR


def test_fixtures_are_package_data():
    """The package reads its fixtures from inside itself, never from tests/."""
    for name in NAMES:
        path = fixture_path(name)
        assert path.is_file() and path.parent.parent.name == "lxt" and "tests" not in path.parts
    with pytest.raises(ValueError, match="unknown lxt fixture"):
        fixture_path("t5")
