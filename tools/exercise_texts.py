'''The exercises of notebooks 00-05 (prompt, solution, tests, points), applied by ``tools/add_exercises.py``.

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

EX03 = [
    dict(prompt_id="b403758e", code_id="e99f7870", points=1, prompt=r"""
**Exercise 1 — a third association order.** Compute $y = (x_1 x_3)\,x_2$ at $x = (2, 3, 4)$ with
`ops.product` and explain it with `modified_gradient_x_input(..., "attnlrp")`. Before running your code, predict
AttnLRP's relevance with the "halve once per product node above the input" rule. Store the three relevances in
`r_middle` (a list of floats, in the order $x_1, x_2, x_3$).
""", solution=r"""
### BEGIN SOLUTION
middle = lambda x: ops.product(ops.product(x[..., 0], x[..., 2]), x[..., 1])  # noqa: E731
r_middle = modified_gradient_x_input(middle, torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64), "attnlrp").tolist()
print("AttnLRP for (x1 x3) x2:", r_middle)
### END SOLUTION
""", test=r"""
assert len(r_middle) == 3
assert abs(sum(r_middle) - 24) < 1e-9, "the uniform rule conserves here: the relevances add up to y = 24"
### BEGIN HIDDEN TESTS
assert [float(v) for v in r_middle] == [6.0, 12.0, 6.0]  # x2, multiplied last, keeps half
### END HIDDEN TESTS
"""),
    dict(prompt_id="28e12355", code_id="cb7eef19", points=2, prompt=r"""
**Exercise 2 — where does the divergence vanish?** From the divergence table `div`, compute AttnLRP's mean
relative $L_1$ distance between the two orders at every layer (column `layer`; the residual stream after block
$l$) and store it in `by_layer` (a pandas Series indexed by layer). Then store in `vanish_layer` the first layer at
which it is below $10^{-10}$, and explain to yourself why there. (Hint: which computations come *after* that
residual stream?)
""", solution=r"""
### BEGIN SOLUTION
by_layer = div[div.method == "attnlrp"].groupby("layer").rel_l1.mean()
vanish_layer = int(by_layer[by_layer < 1e-10].index.min())
print(by_layer.round(4))
### END SOLUTION
""", test=r"""
assert vanish_layer in set(by_layer.index)
### BEGIN HIDDEN TESTS
_b = div[div.method == "attnlrp"].groupby("layer").rel_l1.mean()
pd.testing.assert_series_equal(by_layer.sort_index(), _b, check_names=False, rtol=1e-9)
assert vanish_layer == min(_l for _l, _v in _b.items() if _v < 1e-10)
assert vanish_layer == n_layers  # after the last block only the read-out follows, the same code in both orders
### END HIDDEN TESTS
"""),
    dict(prompt_id="a24496da", code_id="d49c1e9e", points=1, prompt=r"""
**Exercise 3 — your own sentence.** Write a review sentence (`own_sentence`, lower case, punctuation separated by
spaces) and measure how much the token relevance changes between the two orders of the Rotten Tomatoes model
`rt` (`inv.implementation_invariance`, level `"tokens"`), for AttnLRP and for GI. Store the relative $L_1$
distances in `own_l1 = {"attnlrp": ..., "gi": ...}` (floats).
""", solution=r"""
own_sentence = "a gorgeous , witty , seductive movie ."
### BEGIN SOLUTION
own_ids, own_mask = rt.encode([own_sentence])
own = pd.concat([inv.implementation_invariance(rt.models["(qk)v"], rt.models["q(kv)"], own_ids, m, attention_mask=own_mask)
                 for m in ("attnlrp", "gi")])
own_l1 = own[own.level == "tokens"].set_index("method").rel_l1.to_dict()
print(own[["method", "level", "rel_l1", "max_token_diff", "spearman"]].round(3).to_string(index=False))
### END SOLUTION
""", test=r"""
assert isinstance(own_sentence, str) and len(own_sentence.split()) >= 3
assert set(own_l1) == {"attnlrp", "gi"} and all(float(v) >= 0 for v in own_l1.values())
### BEGIN HIDDEN TESTS
_ids, _mask = rt.encode([own_sentence])
for _m in ("attnlrp", "gi"):
    _d = inv.implementation_invariance(rt.models["(qk)v"], rt.models["q(kv)"], _ids, _m, attention_mask=_mask)
    _v = float(_d[_d.level == "tokens"].rel_l1.iloc[0])
    assert abs(float(own_l1[_m]) - _v) <= 1e-9 + 1e-6 * _v, (_m, own_l1[_m], _v)
assert own_l1["gi"] < 1e-8 < own_l1["attnlrp"]  # GI is implementation invariant, AttnLRP is not
### END HIDDEN TESTS
"""),
]

EX04 = [
    dict(prompt_id="48820799", code_id="39dce28c", points=1, prompt=r"""
1. **Another layer, by hand.** Pick a model (`ex_model`, a key of `maps`) and a layer (`ex_layer`, one of
   `maps[ex_model].layers` below the last) and recompute the mean Pearson agreement of CP-LRP with mask-LOO there,
   directly from the raw maps (`maps[ex_model].relevance["cp-lrp"][ex_layer]` and
   `maps[ex_model].loo["mask"][j]` with `j` the position of `ex_layer` in `.layers`) with
   `lrp_utils.metrics.agreement`. Store it in `by_hand_r` (a float); it must match the summary table.
""", solution=r"""
ex_model, ex_layer = next(iter(maps)), 1  # try another model or layer
### BEGIN SOLUTION
mp = maps[ex_model]
res = lrp_utils.metrics.agreement(mp.relevance["cp-lrp"][ex_layer], mp.loo["mask"][mp.layers.index(ex_layer)],
                                  n_boot=n_boot, seed=seed)
by_hand_r = float(res.pearson)
print(f"{ex_model}, layer {ex_layer}: by hand r = {by_hand_r:.4f} {np.round(res.pearson_ci, 4)}")
### END SOLUTION
""", test=r"""
assert ex_model in maps and ex_layer in maps[ex_model].layers
assert -1 <= by_hand_r <= 1
### BEGIN HIDDEN TESTS
_row = summary[(summary.model == ex_model) & (summary.layer == ex_layer) & (summary.method == "cp-lrp")
               & (summary.removal == "mask")]
assert len(_row) == 1 and np.isclose(by_hand_r, _row.pearson.item()), (by_hand_r, _row.pearson.tolist())
### END HIDDEN TESTS
"""),
    dict(prompt_id="f0e07993", code_id="a747b23f", points=2, prompt=r"""
2. **Which single change gets closer to CP-LRP?** For each model, count the layers (mask removal, layers with a
   defined mean correlation) at which cutting only the softmax (`attnlrp-no-softmax`) has a higher mean Pearson
   correlation with LOO than giving V the full relevance (`attnlrp-full-value`). Guess first, then compute. Store
   `softmax_wins = {model: (layers where cutting the softmax wins, layers compared)}` (pairs of ints).
""", solution=r"""
### BEGIN SOLUTION
s = summary[summary.removal == "mask"].pivot_table(index=["model", "layer"], columns="method", values="pearson").dropna()
wins = (s["attnlrp-no-softmax"] > s["attnlrp-full-value"]).groupby(level="model").agg(["sum", "size"])
softmax_wins = {m: (int(r["sum"]), int(r["size"])) for m, r in wins.iterrows()}
print(wins.rename(columns={"sum": "layers where cutting the softmax wins", "size": "layers"}))
### END SOLUTION
""", test=r"""
assert set(softmax_wins) == set(runs)
assert all(0 <= w <= n for w, n in softmax_wins.values())
### BEGIN HIDDEN TESTS
_by_mask = summary[summary.removal == "mask"]
for _name in runs:
    _p = _by_mask[_by_mask.model == _name].pivot_table(index="layer", columns="method", values="pearson").dropna()
    _want = (int((_p["attnlrp-no-softmax"] > _p["attnlrp-full-value"]).sum()), len(_p))
    assert tuple(softmax_wins[_name]) == _want, (_name, softmax_wins[_name], _want)
### END HIDDEN TESTS
"""),
    dict(prompt_id="fb990ba7", code_id="1dbe2f38", points=1, prompt=r"""
3. **Your own sentence.** Run the whole per-layer comparison (`la.loo_agreement`, methods `("attnlrp", "cp-lrp")`)
   on a sentence of your choice (`own_sentence`; on MiniLM-RT when it ran, else on SmolLM2) and store CP-LRP's
   minus AttnLRP's Pearson correlation with LOO per layer in `own_gap` (a Series indexed by layer). At which
   layers does CP-LRP come out ahead on your sentence?
""", solution=r"""
own_sentence = "a gorgeous , witty , seductive movie that never quite finds its footing ."
own_model, own_tok = (minilm, bert_tok) if "minilm-rt" in runs else (smol, smol_tok)
### BEGIN SOLUTION
own_enc = own_tok([own_sentence], return_tensors="pt")
one = la.loo_agreement(own_model, own_enc.input_ids, own_enc.attention_mask, ("attnlrp", "cp-lrp"), progress=False)
own_table = one.pivot(index="layer", columns="method", values="pearson")
own_gap = own_table["cp-lrp"] - own_table["attnlrp"]
print(own_table.assign(gap=own_gap).round(3))
### END SOLUTION
""", test=r"""
assert len(own_gap) > 0 and own_gap.index.is_unique
### BEGIN HIDDEN TESTS
_enc = own_tok([own_sentence], return_tensors="pt")
_one = la.loo_agreement(own_model, _enc.input_ids, _enc.attention_mask, ("attnlrp", "cp-lrp"), progress=False)
_t = _one.pivot(index="layer", columns="method", values="pearson")
pd.testing.assert_series_equal(own_gap.sort_index(), _t["cp-lrp"] - _t["attnlrp"], check_names=False, rtol=1e-6)
### END HIDDEN TESTS
"""),
]

EX05 = [
    dict(prompt_id="3406a6af", code_id="f2c43122", points=1, prompt=r"""
1. **Sinusoidal PE.** Swap the learned table of the tiny model for the fixed sinusoidal one (below). Predict
   first: does `pa-cp-lrp` still close the budget exactly? Explain `ids` with `pa-cp-lrp` and store the worst
   budget gap $\max_n |\sum_i R_{\text{tok},i} + \sum_i R_{\text{pos},i} - f_n|$ divided by $\max_n |f_n|$ in
   `sin_gap`, and the positions' mean share $\text{mean}_n \sum_i R_{\text{pos},i} / f_n$ in `sin_pos_share` (floats).
""", solution=r"""
tiny_sin = TinyTransformer(TinyConfig(position="sinusoidal", **cfg)).double().reset_parameters(0.5, seed=seed).eval()
### BEGIN SOLUTION
e = explain(tiny_sin, ids, "pa-cp-lrp")
sin_gap = float((e.total - e.logit).abs().max() / e.logit.abs().max())
sin_pos_share = float((e.positions.sum(-1) / e.logit).mean())
print(f"budget gap {sin_gap:.1e}; positions / logit = {sin_pos_share:.3f}")
### END SOLUTION
""", test=r"""
assert float(sin_gap) >= 0
### BEGIN HIDDEN TESTS
_e = explain(tiny_sin, ids, "pa-cp-lrp")
_tok, _pos = _e.tokens.sum(-1), _e.positions.sum(-1)
assert abs(sin_gap - float((_tok + _pos - _e.logit).abs().max() / _e.logit.abs().max())) < 1e-9
assert abs(sin_pos_share - float((_pos / _e.logit).mean())) < 1e-9
assert sin_gap < 1e-8 and abs(sin_pos_share) > 1e-3  # the additive split does not care where p_i comes from
### END HIDDEN TESTS
"""),
    dict(prompt_id="2127fb3e", code_id="bd99fbe0", points=2, prompt=r"""
2. **RoPE with softmax attention.** The model below uses RoPE with softmax attention. Predict which of these
   still hold, then check: (a) tokens + positions = logit under `pa-lrp`; (b) per layer
   $R^{(l)}_{\text{pos}} = \tfrac12(R_{q'} + R_{k'})$ (compare `positions_by_layer` with half of
   `rope_reference(...)["rotated_by_layer"]`). Store the mean budget gap $\text{mean}_n |\text{total}_n/f_n - 1|$
   in `soft_budget_gap`, the largest deviation from the half rule in `soft_half_dev` (floats), and your verdicts
   in `soft_conserves` (gap below $10^{-8}$) and `soft_half_rule` (deviation below $10^{-10}$) as `True` / `False`.
""", solution=r"""
tiny_soft = TinyTransformer(TinyConfig(position="rotary", **cfg)).double().reset_parameters(0.5, seed=seed).eval()
### BEGIN SOLUTION
e, ref = explain(tiny_soft, ids, "pa-lrp"), rope_reference(tiny_soft, ids)
soft_budget_gap = float((e.total / e.logit - 1).abs().mean())
soft_half_dev = max(float((p - 0.5 * r).abs().max()) for p, r in zip(e.positions_by_layer, ref["rotated_by_layer"]))
soft_conserves, soft_half_rule = soft_budget_gap < 1e-8, soft_half_dev < 1e-10
print(f"budget gap {soft_budget_gap:.3f}; half rule, max deviation {soft_half_dev:.1e}")
### END SOLUTION
""", test=r"""
assert soft_conserves in (True, False) and soft_half_rule in (True, False)
### BEGIN HIDDEN TESTS
_e, _ref = explain(tiny_soft, ids, "pa-lrp"), rope_reference(tiny_soft, ids)
_gap = float((_e.total / _e.logit - 1).abs().mean())
_dev = max(float((_p - 0.5 * _r).abs().max()) for _p, _r in zip(_e.positions_by_layer, _ref["rotated_by_layer"]))
assert abs(soft_budget_gap - _gap) < 1e-9 and abs(soft_half_dev - _dev) < 1e-12
assert not soft_conserves and _gap > 1e-3  # the softmax's Taylor rule absorbs relevance
assert soft_half_rule and _dev < 1e-10     # the rotation rule is local: it holds whatever the rest does
### END HIDDEN TESTS
"""),
    dict(prompt_id="1645ecfa", code_id="7a2337f2", points=1, prompt=r"""
3. **Another prompt.** Write your own prompt template (`my_template`, containing `{}` once, where the review goes)
   and check for each review in `my_texts` whether PA-LRP's combined map (`.combined()`) picks a different top
   review token than its own token part (`.tokens`), i.e. whether the positional term changes the ranking. Use
   `P.prompt_task`, `P.set_targets` and `P.explain_task` as in section 4. Store the pairs (top review token by the
   token part, top review token by the combined map) in `my_tops` (a list, one pair per review). (Needs SmolLM2:
   `model` = `"all"` or `"smollm2-135m"`.)
""", solution=r"""
lm, tok = models["smollm2-135m"]
my_template = "Movie review: {}\nWas this review positive or negative? Answer:"
my_texts = ["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés."]
### BEGIN SOLUTION
t2 = P.set_targets(lm, P.prompt_task(tok, my_texts, template=my_template), options=P.OPTIONS, tokenizer=tok)
e2 = P.explain_task(lm, t2, ["pa-lrp"], progress=False)["pa-lrp"]
my_tops = []
for b in range(len(my_texts)):
    top = tuple(t2.tokens[b][int(torch.where(t2.valid[b], r[b], -np.inf).argmax())] for r in (e2.tokens, e2.combined()))
    my_tops.append(top)
    print(f"{my_texts[b]!r}: answer {tok.decode(t2.target[b])!r}, top review token (tokens, combined): {top}")
### END SOLUTION
""", test=r"""
assert my_template.count("{}") == 1
assert len(my_tops) == len(my_texts) and all(len(pair) == 2 for pair in my_tops)
### BEGIN HIDDEN TESTS
_t = P.set_targets(lm, P.prompt_task(tok, my_texts, template=my_template), options=P.OPTIONS, tokenizer=tok)
_e = P.explain_task(lm, _t, ["pa-lrp"], progress=False)["pa-lrp"]
for _b, _pair in enumerate(my_tops):
    _want = tuple(_t.tokens[_b][int(torch.where(_t.valid[_b], _r[_b], -np.inf).argmax())]
                  for _r in (_e.tokens, _e.combined()))
    assert tuple(_pair) == _want, (_b, _pair, _want)
### END HIDDEN TESTS
"""),
]

EXERCISES = {"00": EX00, "01": EX01, "02": EX02, "03": EX03, "04": EX04, "05": EX05}
