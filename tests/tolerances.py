"""Numeric tolerances used by the tests, each with a one-line reason. Append only."""

# --- metrics / viz (test_metrics.py, test_viz.py)
# Hand-computed float64 micro-cases (sums of a few decimals, trapezoids, correlations): only rounding error.
HAND_FLOAT64_ATOL = 1e-12
# Correlations of exactly (anti-)linear vectors: sqrt and division in float64 leave a few ulps.
CORRELATION_EXACT_ATOL = 1e-12

# --- engine (test_engine.py, test_loo.py, test_tiny.py)
# float64 conservation identities that hold exactly in exact arithmetic: only summation rounding.
EXACT_REL = 1e-10
# The identity rule divides by (x + 1e-10) like lxt, which perturbs relevance by ~1e-10 relative.
IDENTITY_RULE_REL = 1e-8
# Two float64 computations of the same function by different code paths (adapter vs HF forward,
# batched vs looped LOO, padded vs single): summation order differs, nothing else.
SAME_FUNCTION_F64 = 1e-10
# lxt fixtures: issue 3 asks for cosine >= 0.9999 and max error <= 1e-4 of max|R|.
LXT_MIN_COSINE = 0.9999
LXT_MAX_REL_ERR = 1e-4
# HF LlamaRMSNorm computes in float32 even in a float64 model (PAPERS.md): ~1e-7 relative.
HF_LLAMA_F32_NORM_REL = 1e-6

# --- reference oracle (test_reference.py)
# explain() (identity eps patched to 0) vs the explicit rule-by-rule reference, relative to max|R|: same numbers by other formulas, float64 rounding only (observed <= 1e-13).
REFERENCE_MATCH_REL = 1e-10

# --- claims (test_claims.py)
# The committed 03_toy.csv against a fresh toy run: exact except IG, whose captum Riemann sum may move in the last digits.
TOY_IG_ABS = 1e-9

# --- architectures (test_architectures.py, test_arch_rules.py, test_vision.py)
# HF eager attention takes its softmax in float32 even in a float64 model (Gemma 2 runs eager only: no
# sdpa path with soft-capping); lrp_utils' attention stays float64: ~1e-6 relative between the two.
HF_F32_SOFTMAX_REL = 1e-5

# --- real models (test_zoo.py)
# float32 SmolLM2-RT, padded batch vs one example at a time: other matmul shapes, and left padding
# shifts the RoPE angles (relative positions equal, rounding not); measured ~1e-6 relative.
PADDED_F32_REL = 1e-4
