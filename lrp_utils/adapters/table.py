"""The supported-models table of the README, generated from the adapter registry.

:func:`model_rows` lists every built-in class (``lrp_utils.adapters.BUILTIN``) with its family,
task, positions and what the test-suite proves for it (:data:`TESTED`, tags explained in
:data:`PROOFS`); :func:`markdown` renders it.  ``tests/test_supported_models.py`` checks that the
README holds exactly this table and that every claimed proof is backed by a test over that class.
"""
from __future__ import annotations

import importlib

#: proof tag -> what the tests establish (columns of the README table)
PROOFS: dict[str, str] = {
    "zoo": "adapter = model's logits, gi = Gradient x Input, padded (left/right) = single, LOO NaN at the "
           "read-out, model unchanged, every method",
    "cons": "CP-LRP conserves at every layer (bias-free variant)",
    "lxt": "equals lxt 2.1 (AttnLRP and CP-LRP where lxt has them)",
    "pixels": "vision tests: adapter = model's logits, gi = Gradient x Input at the pixels, pixels per patch "
              "= patch token, every method, model unchanged",
}

#: class name -> proof tags (tests/test_supported_models.py verifies each claim)
TESTED: dict[str, tuple[str, ...]] = {
    "TinyTransformer": ("cons",),
    "BertForSequenceClassification": ("zoo", "cons", "lxt"),
    "GPT2LMHeadModel": ("zoo", "cons", "lxt"),
    "GPT2ForSequenceClassification": ("zoo", "cons"),
    "LlamaForCausalLM": ("zoo", "cons", "lxt"),
    "LlamaForSequenceClassification": ("zoo", "cons"),
    "MistralForCausalLM": ("zoo", "cons"),
    "Qwen2ForCausalLM": ("zoo", "cons", "lxt"),
    "Qwen2ForSequenceClassification": ("zoo", "cons"),
    "Qwen3ForCausalLM": ("zoo", "cons", "lxt"),
    "Phi3ForCausalLM": ("zoo", "cons"),
    "Olmo2ForCausalLM": ("zoo", "cons"),
    "Gemma2ForCausalLM": ("zoo", "cons"),
    "Gemma3ForCausalLM": ("zoo", "cons", "lxt"),
    "GPTNeoXForCausalLM": ("zoo", "cons"),
    "RobertaForSequenceClassification": ("zoo", "cons"),
    "ElectraForSequenceClassification": ("zoo", "cons"),
    "DistilBertForSequenceClassification": ("zoo", "cons"),
    "ViTForImageClassification": ("cons", "lxt", "pixels"),
}

_POSITIONS = {"additive": "learned, added", "rotary": "RoPE"}
_NOTES = {
    "tiny": "the package's own model (any position kind)",
    "mistral": "sliding window",
    "qwen2": "q/k/v biases, sliding-window layers",
    "qwen3": "per-head q/k RMSNorm",
    "phi3": "fused qkv / gate-up, partial rotary, window",
    "olmo2": "post-norms, q/k RMSNorm",
    "gemma2": "(1 + w) RMSNorm, sqrt(d) scale, soft-capping (scores, logits), windows",
    "gemma3": "(1 + w) RMSNorm, q/k norms, RoPE base per layer type, logit soft-capping, windows",
    "gpt_neox": "parallel residual, partial rotary",
    "roberta": "positions from padding_idx + 1",
    "electra": "embedding projection",
    "vit": "pixel_values; [CLS] + patches",
    "llama": "grouped-query attention",
    "bert": "token types, [CLS] pooler",
}


def _task(name: str) -> str:
    if "CausalLM" in name or "LMHead" in name:
        return "next token"
    if "ImageClassification" in name:
        return "image class"
    return "class" if "SequenceClassification" in name else "any"


def _positions(family: str) -> str:
    if family == "tiny":
        return "learned / sinusoidal / RoPE / none"
    from . import FAMILIES

    module, cls = FAMILIES[family]
    kind = getattr(importlib.import_module(f"{__package__}.{module}"), cls).positions
    return _POSITIONS.get(kind, "none")


def model_rows() -> list[dict]:
    """One dict per built-in class: ``class, family, task, positions, notes, tested`` (tags)."""
    from . import BUILTIN

    return [{"class": name, "family": family, "task": _task(name), "positions": _positions(family),
             "notes": _NOTES.get(family, ""), "tested": TESTED.get(name, ())}
            for name, family in BUILTIN.items()]


def markdown() -> str:
    """The README table (markdown), then the legend of the proof tags."""
    lines = ["| class | family | task | positions | specifics | tested |", "|---|---|---|---|---|---|"]
    for r in model_rows():
        lines.append(f"| `{r['class']}` | `{r['family']}` | {r['task']} | {r['positions']} | {r['notes']} | "
                     f"{', '.join(r['tested']) or '-'} |")
    lines.append("")
    lines += [f"* **{tag}**: {text}" for tag, text in PROOFS.items()]
    return "\n".join(lines)
