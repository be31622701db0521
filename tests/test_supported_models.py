"""The supported-models table (README, generated from the adapter registry) is current and every
proof it claims is backed by a test over that class; ``register_adapter`` and ``load_local``."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import transformers
from archs import ARCHS, VISION_ARCHS, arch_model
from tolerances import SAME_FUNCTION_F64

from lrp_utils import adapters, explain
from lrp_utils.adapters import BUILTIN, FAMILIES, get_adapter, register_adapter, supported
from lrp_utils.adapters.table import PROOFS, TESTED, markdown, model_rows
from lrp_utils.models import load_local

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = str(ROOT / "tests" / "fixtures")


def _classes(builders) -> set[str]:
    return {type(arch_model(k)).__name__ for k in builders}


def test_readme_table_is_generated_from_the_registry():
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- BEGIN GENERATED: models -->\n(.*?)\n<!-- END GENERATED: models -->", text, re.S)
    assert found, "README lacks the generated models table markers"
    stale = "README table is stale: paste lrp_utils.adapters.table.markdown() between the markers"
    assert found.group(1).strip() == markdown().strip(), stale


def test_every_claimed_proof_has_its_test():
    import sys

    sys.path.insert(0, FIXTURES)
    from lxt_loader import NAMES, fixture_path

    zoo, vision = _classes(ARCHS), _classes(VISION_ARCHS)
    lxt = {torch.load(fixture_path(n), weights_only=True)["arch"] for n in NAMES} | {"ViTForImageClassification"}
    backed = {"zoo": zoo, "cons": zoo | vision | {"TinyTransformer"}, "lxt": lxt, "pixels": vision}
    assert set(backed) == set(PROOFS)
    assert set(TESTED) == set(BUILTIN), set(TESTED) ^ set(BUILTIN)
    for row in model_rows():
        for tag in row["tested"]:
            assert row["class"] in backed[tag], f"{row['class']} claims {tag!r} without a test"
        assert row["family"] in FAMILIES
    assert "TorchViT" in lxt  # the ViT lxt fixture is the torchvision-layout model, rebuilt as HF ViT


def test_register_adapter_maps_a_class_onto_a_family(monkeypatch):
    monkeypatch.setattr(adapters, "_REGISTRY", dict(adapters._REGISTRY))  # registrations end with the test
    base = arch_model("qwen2")

    class MyQwen(transformers.Qwen2ForCausalLM):
        pass

    with pytest.raises(TypeError, match="register_adapter") as err:
        get_adapter(object())
    assert "Gemma3ForCausalLM" in str(err.value) and "ViTForImageClassification" in str(err.value)
    with pytest.raises(ValueError, match="unknown family"):
        register_adapter(MyQwen, "qwen9")
    mine = MyQwen(base.config).double().eval()
    mine.load_state_dict(base.state_dict())
    assert type(get_adapter(mine)).__name__ == "Qwen2Adapter"  # a subclass finds its base's family
    register_adapter("MyRenamedQwen", "qwen2")
    assert "MyRenamedQwen" in supported()
    ids = torch.randint(1, 50, (1, 7))
    assert torch.equal(explain(mine, ids, "attnlrp").tokens, explain(base, ids, "attnlrp").tokens)


def test_load_local_by_path(tmp_path):
    model = arch_model("qwen2")
    model.save_pretrained(tmp_path / "qwen")
    loaded, tok = load_local(tmp_path / "qwen", dtype=torch.float64)
    ids = torch.randint(1, 50, (2, 6))
    assert tok is None and not loaded.training and type(loaded) is type(model)
    with torch.no_grad():
        diff = (loaded(input_ids=ids).logits - model(input_ids=ids).logits).abs().max()
    assert float(diff) <= SAME_FUNCTION_F64
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_local(tmp_path)
    other = transformers.OPTForCausalLM(transformers.OPTConfig(
        vocab_size=60, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, word_embed_proj_dim=16))
    other.save_pretrained(tmp_path / "opt")
    with pytest.raises(TypeError, match="OPTForCausalLM.*not supported"):
        load_local(tmp_path / "opt")
