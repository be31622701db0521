'''The exercises (prompt, solution, tests, points) applied by ``tools/add_exercises.py``: 00-02 here, 03-05 in
``exercise_texts_35.py``.

Keyed by notebook number; ``prompt_id`` / ``code_id`` are the ids of the notebook's existing prompt and
answer cells. Conventions: answers are stored under names that no other cell defines (so a test cannot
pass on a value left over from earlier cells); test-cell helpers start with ``_``; test cells print
nothing to stderr and end in no numeric expression (nbgrader reads either as a grade).
'''

INTRO = """Every exercise has an answer cell and a locked test cell after it. Store your results under the names the
exercise gives, then run the test cell: its visible asserts check the form of your answers, and the grader's
hidden tests recompute the numbers. In the student version (`make course`, folder `build/course/release/`)
each answer cell ends in `raise NotImplementedError()`: replace that line with your code."""

EX00 = [
    dict(prompt_id="5a52f3de", code_id="31cdbbca", points=1, prompt=r"""
1. **Negate the sentence.** Explain the negated sentence `"the acting is not wonderful ."` with AttnLRP on
   MiniLM-RT, explaining the class the model now predicts. Store the predicted class name in `neg_label`, the
   token relevance (a 1-D tensor, one value per token of `neg_tokens`) in `neg_relevance`, and the token with the
   most negative relevance in `neg_most_negative`.
""", solution=r"""
clf, clf_tok = models["minilm-rt"]
neg_ids, neg_mask, neg_tokens = encode(clf_tok, "the acting is not wonderful .", device)
### BEGIN SOLUTION
neg = explain(clf, neg_ids, "attnlrp", attention_mask=neg_mask)
neg_label = clf.config.id2label[int(neg.target[0])]
neg_relevance = neg.tokens[0]
neg_most_negative = neg_tokens[int(neg_relevance.argmin())]
print("predicted:", neg_label, "| most negative token:", neg_most_negative)
pd.DataFrame({"attnlrp": neg_relevance.double().numpy()}, index=neg_tokens).T.round(3)
### END SOLUTION
""", test=r"""
assert neg_label in clf.config.id2label.values(), neg_label
assert tuple(neg_relevance.shape) == (len(neg_tokens),), "one relevance value per token"
assert neg_most_negative in neg_tokens
### BEGIN HIDDEN TESTS
_ref = explain(clf, neg_ids, "attnlrp", attention_mask=neg_mask)
assert neg_label == clf.config.id2label[int(_ref.target[0])]
torch.testing.assert_close(neg_relevance.detach().cpu().double(), _ref.tokens[0].cpu().double(), rtol=1e-4, atol=1e-6)
assert neg_most_negative == neg_tokens[int(_ref.tokens[0].argmin())]
### END HIDDEN TESTS
"""),
    dict(prompt_id="ffa1dd8d", code_id="e2d6bb05", points=2, prompt=r"""
2. **Another layer.** LOO can remove a position at any layer (`loo(..., layer=l)`). At the middle layer
   `l = L // 2`, compute LOO for the sentence above and the Pearson correlation with it of the CP-LRP and the
   AttnLRP relevance at the same layer (`exps[m].layers[l][0]`), over the positions where LOO is defined (not NaN).
   Store the correlations in `mid_pearson = {"cp-lrp": ..., "attnlrp": ...}` (floats) and the name of the method
   that is closer to LOO here in `mid_closer`. (Notebook 04 asks this over many sentences.)
""", solution=r"""
l = net.config.num_hidden_layers // 2
### BEGIN SOLUTION
loo_l = loo(net, ids, layer=l, attention_mask=mask)[0]
ok = ~loo_l.isnan()
mid_pearson = {m: torch.corrcoef(torch.stack([loo_l[ok], exps[m].layers[l][0][ok]]))[0, 1].item()
               for m in ["cp-lrp", "attnlrp"]}
mid_closer = max(mid_pearson, key=mid_pearson.get)
print(f"layer {l}:", {m: round(r, 3) for m, r in mid_pearson.items()}, "closer to LOO:", mid_closer)
### END SOLUTION
""", test=r"""
assert set(mid_pearson) == {"cp-lrp", "attnlrp"}
assert all(-1 <= float(r) <= 1 for r in mid_pearson.values()), mid_pearson
assert mid_closer in mid_pearson
### BEGIN HIDDEN TESTS
_loo = loo(net, ids, layer=l, attention_mask=mask)[0].double().cpu()
_ok = ~_loo.isnan()
for _m in ("cp-lrp", "attnlrp"):
    _r = torch.corrcoef(torch.stack([_loo[_ok], exps[_m].layers[l][0].double().cpu()[_ok]]))[0, 1].item()
    assert abs(float(mid_pearson[_m]) - _r) < 1e-4, (_m, mid_pearson[_m], _r)
assert mid_closer == max(("cp-lrp", "attnlrp"), key=lambda _k: float(mid_pearson[_k]))
### END HIDDEN TESTS
"""),
    dict(prompt_id="dce1f15c", code_id="12938562", points=1, prompt=r"""
3. **Conservation without biases.** SmolLM2 (a LLaMA) has no bias terms at all. Predict first: does CP-LRP's
   token relevance add up to the explained logit there? Then explain `"The capital of France is"` with CP-LRP
   on SmolLM2 and store the explained logit in `lm_logit`, the sum of the token relevance in `lm_sum` (floats)
   and your verdict in `lm_conserves` (`True` if the two agree to 0.1 %, else `False`).
""", solution=r"""
lm, lm_tok = models["smollm2-135m"]
lm_ids, lm_mask, _ = encode(lm_tok, "The capital of France is", device)
### BEGIN SOLUTION
e = explain(lm, lm_ids, "cp-lrp", attention_mask=lm_mask)
lm_logit, lm_sum = float(e.logit[0]), float(e.tokens.sum())
lm_conserves = abs(lm_sum - lm_logit) < 1e-3 * abs(lm_logit)
print(f"logit {lm_logit:.4f}, sum of token relevance {lm_sum:.4f}")
### END SOLUTION
""", test=r"""
assert lm_conserves in (True, False)
assert float(lm_logit) != 0.0
### BEGIN HIDDEN TESTS
_ref = explain(lm, lm_ids, "cp-lrp", attention_mask=lm_mask)
_logit, _sum = float(_ref.logit[0]), float(_ref.tokens.sum())
assert abs(float(lm_logit) - _logit) <= 1e-4 * abs(_logit), (lm_logit, _logit)
assert abs(float(lm_sum) - _sum) <= 1e-4 * abs(_logit), (lm_sum, _sum)
assert bool(lm_conserves) == (abs(_sum - _logit) < 1e-3 * abs(_logit))
assert lm_conserves  # no biases: the CP rules conserve up to float32 rounding
### END HIDDEN TESTS
"""),
]

EX01 = [
    dict(prompt_id="5d29764c", code_id="89e5e149", points=2, prompt=r"""
1. **RMSNorm instead of LayerNorm.** RMSNorm $x/\mathrm{rms}(x)$ is also homogeneous of degree 0. Predict which
   methods conserve on a bias-free RMSNorm block, then check: explain the sequences `tiny_ids` with each method
   in `tiny_methods` on the model below, and store per method the worst relative conservation error
   $\max_n |\sum_i R_{n,i} - f_n| / |f_n|$ in `rms_error` (a dict method → float), and the set of methods whose
   error is below $10^{-8}$ in `rms_conserving`. (Positions are off, so `exp.tokens` is the whole input relevance.)
""", solution=r"""
cfg = TinyConfig(n_layers=1, bias=False, position="none", norm="rmsnorm", d_model=32, n_heads=4)
tiny_rms = TinyTransformer(cfg).double().reset_parameters(0.5, seed=seed).eval()
### BEGIN SOLUTION
rms_error = {}
for m in tiny_methods:
    e = explain(tiny_rms, tiny_ids, m, attention_mask=tiny_mask)
    rms_error[m] = float(((e.tokens.sum(-1) - e.logit) / e.logit).abs().max())
rms_conserving = {m for m, err in rms_error.items() if err < 1e-8}
print({m: f"{err:.1e}" for m, err in rms_error.items()}, "conserve:", sorted(rms_conserving))
### END SOLUTION
""", test=r"""
assert set(rms_error) == set(tiny_methods)
assert set(rms_conserving) <= set(tiny_methods)
### BEGIN HIDDEN TESTS
_s = C.layer_sums(tiny_rms, tiny_ids, tiny_mask, tiny_methods, progress=False)
_s = _s[_s.layer == -1]
_err = ((_s["sum"] - _s["logit"]) / _s["logit"]).abs().groupby(_s["method"]).max()
for _m in tiny_methods:
    assert abs(rms_error[_m] - _err[_m]) <= 1e-6 * max(1.0, _err[_m]), (_m, rms_error[_m], _err[_m])
assert set(rms_conserving) == {"cp-lrp"}  # degree-0 homogeneous like LayerNorm: only the LN-rule conserves
### END HIDDEN TESTS
"""),
    dict(prompt_id="040b0129", code_id="899b71d5", points=2, prompt=r"""
2. **Another removal operator, another target.** Re-score the first five sentences with Ali et al.'s operator
   (`removal="unk"`: removed tokens become `[UNK]`) for AttnLRP and CP-LRP, twice: explaining and scoring the
   **true class** (`target=labels[:5]`), and the **model's own prediction** (`target=None`). Use
   `F.run_faithfulness` (protocol `"ali"`, `exclude_ids=specials` as above). Store the mean AUAC in
   `unk_auac[kind][method]` with `kind` in `("true class", "prediction")`, and in `unk_same_order` whether the
   two methods come in the same AUAC order for both targets. Does the conclusion survive?
""", solution=r"""
### BEGIN SOLUTION
unk_auac = {}
for kind, target in [("true class", labels[:5]), ("prediction", None)]:
    r5, _ = F.run_faithfulness(clf, ids[:5], mask[:5], ["attnlrp", "cp-lrp"], target=target, protocol="ali",
                               removal="unk", unk_id=tok.unk_token_id, exclude_ids=specials, n_boot=200,
                               seed=seed, progress=False)
    unk_auac[kind] = r5.summary.query("metric == 'AUAC'").set_index("method")["mean"].to_dict()
ahead = {kind: a["attnlrp"] > a["cp-lrp"] for kind, a in unk_auac.items()}
unk_same_order = ahead["true class"] == ahead["prediction"]
pd.DataFrame(unk_auac).round(3)
### END SOLUTION
""", test=r"""
assert set(unk_auac) == {"true class", "prediction"}
assert all(set(a) == {"attnlrp", "cp-lrp"} and all(0 <= v <= 1 for v in a.values()) for a in unk_auac.values())
assert unk_same_order in (True, False)
### BEGIN HIDDEN TESTS
with torch.no_grad():
    _pred = clf(input_ids=ids[:5].to(clf.device), attention_mask=mask[:5].to(clf.device)).logits.argmax(-1).cpu()
_got = {}
for _kind, _tgt in [("true class", labels[:5]), ("prediction", _pred)]:
    _rel = {_m: explain(clf, ids[:5], _m, target=_tgt, attention_mask=mask[:5]).tokens for _m in ("attnlrp", "cp-lrp")}
    _sc = F.RemovalScorer(clf, ids[:5], mask[:5], _tgt, removal="unk", unk_id=tok.unk_token_id, progress=False)
    _got[_kind] = F.faithfulness(_sc, _rel, valid[:5], "ali", n_boot=10).summary.query("metric == 'AUAC'").set_index("method")["mean"]
    for _m in ("attnlrp", "cp-lrp"):
        assert abs(unk_auac[_kind][_m] - _got[_kind][_m]) < 1e-3, (_kind, _m, unk_auac[_kind][_m], _got[_kind][_m])
_ahead = [unk_auac[_kind]["attnlrp"] > unk_auac[_kind]["cp-lrp"] for _kind in ("true class", "prediction")]
assert bool(unk_same_order) == (_ahead[0] == _ahead[1])
### END HIDDEN TESTS
"""),
    dict(prompt_id="98685862", code_id="c20a05b6", points=1, prompt=r"""
3. **Your own probe.** Put a name of your choice (`probe_name`, lower case; or a place, a studio) into the
   template below, which starts with the name, and explain the positive class (`target=1`) with CP-LRP and
   AttnLRP. Store per method the name's share of relevance, the relevance summed over the name's word pieces
   divided by $\sum_i |R_i|$ over the sentence, in `probe_share` (a dict method → float). Compare the methods.
""", solution=r"""
probe_template = "{} directed this wonderful film ."
probe_name = "spielberg"
### BEGIN SOLUTION
p_ids, p_mask = F.encode(tok, [probe_template.format(probe_name)])
n_pieces = len(tok(probe_name, add_special_tokens=False)["input_ids"])  # they follow [CLS]
probe_share = {}
for m in ["cp-lrp", "attnlrp"]:
    R = explain(clf, p_ids, m, target=1, attention_mask=p_mask).tokens[0].double()
    probe_share[m] = float(R[1:1 + n_pieces].sum() / R.abs().sum())
print(probe_name, {m: round(v, 3) for m, v in probe_share.items()})
### END SOLUTION
""", test=r"""
assert set(probe_share) == {"cp-lrp", "attnlrp"}
assert all(-1 <= float(v) <= 1 for v in probe_share.values()), "a share of sum |R| lies in [-1, 1]"
### BEGIN HIDDEN TESTS
_p = F.name_swap_probe(clf, tok, [probe_template], {probe_name: "-"}, methods=["cp-lrp", "attnlrp"], target=1)
for _m, _v in _p.set_index("method")["name_share"].items():
    assert abs(float(probe_share[_m]) - _v) < 1e-4, (_m, probe_share[_m], _v)
### END HIDDEN TESTS
"""),
]

EX02 = [
    dict(prompt_id="3e279bae", code_id="e82bd4b0", points=1, prompt=r"""
1. **A sharper softmax absorbs differently.** Multiply the scores `xs` by 10 (a peaked distribution) and compare
   the relevance the softmax absorbs, $\sum R_{\text{out}} - \sum R_{\text{in}}$ (same upstream gradient `g_s`),
   with the one above. Store it in `absorbed = {1: ..., 10: ...}` (floats, keyed by the scale factor).
""", solution=r"""
### BEGIN SOLUTION
absorbed = {}
for temp in [1, 10]:
    xt = (temp * xs.detach()).requires_grad_()
    st = torch.softmax(xt, -1)
    Rt = xt.detach() * torch.autograd.grad(st, xt, g_s)[0]
    absorbed[temp] = float((st.detach() * g_s).sum() - Rt.sum())
    print(f"scale {temp:>2}: sum R_out = {(st.detach() * g_s).sum():.4f}, sum R_in = {Rt.sum():.4f}")
### END SOLUTION
""", test=r"""
assert set(absorbed) == {1, 10}
### BEGIN HIDDEN TESTS
for _t in (1, 10):
    _x = _t * xs.detach()
    _s = torch.softmax(_x, -1)
    _Rs = _s * g_s
    _Rin = _x * (_Rs - _s * _Rs.sum())  # the Taylor rule, written out
    assert abs(absorbed[_t] - float(_Rs.sum() - _Rin.sum())) < 1e-10, (_t, absorbed[_t])
assert abs(absorbed[1] - float(R_s.sum() - R_taylor.sum())) < 1e-10  # scale 1 is the example above
### END HIDDEN TESTS
"""),
    dict(prompt_id="25a4cd01", code_id="c20cab19", points=1, prompt=r"""
2. **Cut the softmax path.** `attnlrp-no-softmax` keeps the uniform split at $AV$ but treats $A$ as constant.
   Predict its softmax term in the audit, then check: run the audit (`C.absorption_audit`) with this method on
   the first four MiniLM sentences (`inputs[classifier]`) and store the largest |softmax term| over all stages
   and sentences in `ns_softmax` and the largest |products term| in `ns_products` (floats, logit units).
""", solution=r"""
### BEGIN SOLUTION
a2 = C.absorption_audit(clf, *[t[:4] for t in inputs[classifier]], method="attnlrp-no-softmax", progress=False)
ns_softmax, ns_products = float(a2.softmax.abs().max()), float(a2.products.abs().max())
print(C.audit_summary(a2)[["stage", "softmax", "products", "bias"]].round(3).head(4))
### END SOLUTION
""", test=r"""
assert float(ns_softmax) >= 0 and float(ns_products) >= 0
### BEGIN HIDDEN TESTS
_a = C.absorption_audit(clf, *[t[:4] for t in inputs[classifier]], method="attnlrp-no-softmax", progress=False)
assert float(ns_softmax) == float(_a.softmax.abs().max()) == 0.0  # A is constant: nothing reaches the scores
assert abs(float(ns_products) - float(_a.products.abs().max())) <= 1e-6 * max(1.0, float(ns_products))
assert float(ns_products) > 1e-3 * float(_a.logit.abs().max())  # half of R(AV) is lost at the constant A
### END HIDDEN TESTS
"""),
    dict(prompt_id="ee1fc19e", code_id="2e1a4404", points=1, prompt=r"""
3. **Cost of other methods.** Does the rule choice change the cost? On SmolLM2 with the 32 random tokens
   `cost_ids`, explain with each of `gi`, `cp-lrp` and `attnlrp` and record the CPU seconds of one call
   (`time.process_time()`, after a warm-up call) and the memory the call keeps for its backward pass
   (`cost.saved_bytes`, in MB = bytes / 2**20). Store them in a DataFrame `cost32` indexed by method with
   columns `cpu_s` and `saved_mb`.
""", solution=r"""
cost_ids = torch.randint(1000, llm.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(seed)).to(device)
### BEGIN SOLUTION
cost_rows = {}
for m in ["gi", "cp-lrp", "attnlrp"]:
    explain(llm, cost_ids, m)  # warm-up
    c0 = time.process_time()
    explain(llm, cost_ids, m)
    cost_rows[m] = {"cpu_s": time.process_time() - c0,
                    "saved_mb": cost.saved_bytes(llm, lambda: explain(llm, cost_ids, m)) / 2**20}
cost32 = pd.DataFrame(cost_rows).T
cost32.round(3)
### END SOLUTION
""", test=r"""
assert set(cost32.index) == {"gi", "cp-lrp", "attnlrp"} and {"cpu_s", "saved_mb"} <= set(cost32.columns)
assert (cost32["cpu_s"] > 0).all() and (cost32["saved_mb"] > 0).all()
### BEGIN HIDDEN TESTS
for _m in ("gi", "cp-lrp", "attnlrp"):
    _mb = cost.saved_bytes(llm, lambda: explain(llm, cost_ids, _m)) / 2**20
    # allocator reuse moves the count by about 1 % between calls; the methods differ by more than 10 %
    assert abs(cost32.loc[_m, "saved_mb"] - _mb) <= 0.05 * _mb, (_m, cost32.loc[_m, "saved_mb"], _mb)
### END HIDDEN TESTS
"""),
]

from exercise_texts_35 import EX03, EX04, EX05  # noqa: E402

EXERCISES = {"00": EX00, "01": EX01, "02": EX02, "03": EX03, "04": EX04, "05": EX05}
