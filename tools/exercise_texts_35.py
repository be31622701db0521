"""The exercises of notebooks 03-05 (see ``exercise_texts.py`` for the conventions)."""

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
