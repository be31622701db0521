"""Tests for lrp_utils.viz: HTML escaping and colours, token cleaning, figure shapes, saving."""
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from lrp_utils import viz
from tolerances import HAND_FLOAT64_ATOL

BG = re.compile(r"background-color:#([0-9a-f]{6})")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    matplotlib.pyplot.close("all")


def rgb(hex_colour):
    return tuple(int(hex_colour[i:i + 2], 16) for i in (0, 2, 4))


# ----------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("tok, text", [
    ("##ing", "ing"), ("##", "##"), ("Ġthe", " the"), ("▁the", " the"), ("Ċ", "⏎"), ("ĊĊ", "⏎⏎"),
    ("<0x0A>", "⏎"), ("[CLS]", "[CLS]"), ("hello", "hello"), ("Ġ", " "),
])
def test_clean_token(tok, text):
    assert viz.clean_token(tok) == text


def test_html_escapes_markup_and_quotes():
    out = viz.token_html(["<b>&", '"q"', "it's"], [1.0, 0.0, -1.0], title="<i>t</i>")
    assert "&lt;b&gt;&amp;" in out and "&quot;q&quot;" in out and "it&#x27;s" in out
    assert "<b>" not in out and "<i>" not in out


def test_colour_symmetry_and_white_zero():
    assert viz.relevance_color(0.0) == "#ffffff"
    assert viz.relevance_color(1.0) == "#ff0000" and viz.relevance_color(-1.0) == "#0000ff"
    for v in (0.1, 0.37, 0.8):
        r, g, b = rgb(viz.relevance_color(v)[1:])
        assert rgb(viz.relevance_color(-v)[1:]) == (b, g, r) and r == 255 > b
    R = np.array([0.5, -2.0, 0.0, 1.0])
    pos, neg = BG.findall(viz.token_html(list("abcd"), R)), BG.findall(viz.token_html(list("abcd"), -R))
    assert [rgb(c)[::-1] for c in pos] == [rgb(c) for c in neg]
    assert pos[2] == "ffffff" and pos[1] == "0000ff"  # max |R| reaches full blue after "max-abs"


def test_normalize_options():
    raw = viz.token_html(["a", "b"], torch.tensor([0.5, 3.0]), normalize=None)  # clipped to [-1, 1]
    assert BG.findall(raw) == ["ff8080", "ff0000"] and 'title="R = 3"' in raw
    assert BG.findall(viz.token_html(["a", "b"], [0.5, 1.0], normalize=2.0)) == ["ffbfbf", "ff8080"]
    with pytest.raises(ValueError):
        viz.token_html(["a", "b"], [0.5, 1.0], normalize="z-score")
    with pytest.raises(ValueError):
        viz.token_html(["a", "b"], [0.5])


def text_of(html_str):
    return re.sub(r"<[^>]+>", "", html_str.split("colour:")[0])


def test_subword_joining():
    bert = viz.token_html(["[CLS]", "play", "##ing", "now"], [0.0, 1.0, 1.0, 0.5])
    assert text_of(bert).replace("</div", "").strip().startswith("[CLS] playing now")
    gpt = viz.token_html(["Hello", "Ġworld", "Ċ", "Bye"], [1.0, 0.5, 0.0, -1.0])
    assert "Hello world⏎" in text_of(gpt) and "⏎</span><br>" in gpt


def test_show_tokens_displays(capsys):
    viz.show_tokens(["a"], [1.0])
    assert "HTML" in capsys.readouterr().out  # outside a notebook IPython prints the object's repr


# ----------------------------------------------------------------------------- figures
def test_token_heatmap_rows_and_symmetric_scale():
    rows = {"GI": [1.0, -2.0, 0.5, 0.0], "CP-LRP": torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)}
    fig = viz.token_heatmap(["a", "$x$", "##b", "Ġc"], rows, title="t")
    ax = fig.axes[0]
    assert len(ax.images) == 1 and ax.images[0].get_array().shape == (2, 4)
    assert ax.images[0].get_clim() == (-1.0, 1.0)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["GI", "CP-LRP"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", r"\$x\$", "##b", "c"]
    assert "row max" in fig.axes[1].get_ylabel()  # colour bar says how rows were scaled
    np.testing.assert_allclose(ax.images[0].get_array()[1], [0.25, 0.5, 0.75, 1.0], atol=HAND_FLOAT64_ATOL)


def test_token_heatmap_array_input_and_errors():
    fig = viz.token_heatmap(list("abc"), np.array([[1.0, 2.0, 3.0]]), row_labels=["m"], normalize=None)
    assert fig.axes[0].images[0].get_clim() == (-3.0, 3.0) and fig.axes[1].get_ylabel() == "relevance"
    with pytest.raises(ValueError):
        viz.token_heatmap(list("ab"), np.ones((2, 2)), row_labels=["only one"])
    with pytest.raises(ValueError):
        viz.token_heatmap(list("abc"), {"m": [1.0, 2.0]})


def test_layer_map_axes_and_scale():
    data = np.arange(12.0).reshape(3, 4) - 3.0  # [L+1 = 3, seq = 4]
    fig = viz.layer_map(data, ["a", "b", "c", "d"])
    ax = fig.axes[0]
    mesh = ax.collections[0]
    assert mesh.get_array().size == 12 and mesh.get_clim() == (-8.0, 8.0)
    assert ax.get_xlabel() == "token" and ax.get_ylabel() == "layer"
    with pytest.raises(ValueError):
        viz.layer_map(data, ["a"])


def test_plot_curves_lines_and_bands():
    x = np.linspace(0, 1, 5)
    fig = viz.plot_curves({"GI": (x, x, x - 0.1, x + 0.1), "LRP": (x, 1 - x)}, ylabel="p")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 1 and ax.get_ylabel() == "p"
    with pytest.raises(ValueError):
        viz.plot_curves({"bad": (x, x, x)})


def test_plot_by_layer_both_modes():
    pre = pd.DataFrame({"layer": [0, 1, 0, 1], "method": ["a", "a", "b", "b"], "r": [0.1, 0.2, 0.3, 0.4],
                        "lo": [0.0, 0.1, 0.2, 0.3], "hi": [0.2, 0.3, 0.4, 0.5]})
    ax = viz.plot_by_layer(pre, y="r", low="lo", high="hi").axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 2
    raw = pd.DataFrame({"layer": np.repeat([0, 1], 10), "method": "a",
                        "r": np.random.default_rng(0).normal(size=20)})
    ax = viz.plot_by_layer(raw, y="r", ylabel="Pearson r").axes[0]
    assert ax.get_ylabel() == "Pearson r" and len(ax.collections) >= 1


def test_style_and_deterministic_save(tmp_path, monkeypatch):
    monkeypatch.setenv("LRP_UTILS_FIGURES", str(tmp_path))
    viz.set_style()
    assert matplotlib.rcParams["text.usetex"] is False and matplotlib.rcParams["figure.dpi"] == 120
    fig = viz.token_heatmap(["a", "b"], {"m": [1.0, -1.0]})
    first = viz.save(fig, "t.png").read_bytes()
    second = viz.save(fig, "t.png").read_bytes()
    assert first == second and first.startswith(b"\x89PNG") and b"Software" not in first
    assert (tmp_path / "t.png").exists()


# ----------------------------------------------------------------------------- one colour per method
# Machado et al. (2009) colour-vision-deficiency matrices (severity 1), applied to linear RGB
CVD = {
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}


def lab(hex_colour, matrix=np.eye(3)):
    """CIE L*a*b* (D65) of an sRGB hex colour after a linear-RGB transform."""
    c = np.array(rgb(hex_colour[1:])) / 255
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    c = np.clip(matrix @ c, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    f = np.cbrt(np.maximum(xyz / [0.95047, 1.0, 1.08883], 0.008856 ** 3))
    f = np.where(xyz / [0.95047, 1.0, 1.08883] > 0.008856, f, 7.787 * xyz / [0.95047, 1.0, 1.08883] + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def min_distance(colours, matrix=np.eye(3)):
    pts = [lab(c, matrix) for c in colours]
    return min(np.linalg.norm(a - b) for i, a in enumerate(pts) for b in pts[i + 1:])


def test_every_method_and_baseline_has_a_fixed_colour_and_marker():
    import lrp_utils

    needed = set(lrp_utils.METHODS) | {"ig", "rollout", "random", "loo", "loo-zero", "loo-one"}
    assert needed <= set(viz.METHOD_COLORS) and set(viz.METHOD_COLORS) == set(viz.METHOD_MARKERS)
    assert len(set(viz.METHOD_COLORS.values())) == len(viz.METHOD_COLORS)
    assert len(set(viz.METHOD_MARKERS.values())) == len(viz.METHOD_MARKERS)
    assert not set(viz.OTHER_COLORS) & set(viz.METHOD_COLORS.values())
    # pinned: figures made at different times must agree
    assert (viz.METHOD_COLORS["attnlrp"], viz.METHOD_COLORS["cp-lrp"], viz.METHOD_COLORS["gi"]) == \
        ("#D55E00", "#0072B2", "#009E73")


def test_method_colours_are_distinguishable_also_with_colour_blindness():
    colours = list(viz.METHOD_COLORS.values())
    assert min_distance(colours) > 20  # CIE76 Delta E, normal vision
    for name, matrix in CVD.items():
        assert min_distance(colours, matrix) > 10, name


def test_the_distance_check_can_fail():
    assert min_distance(["#D55E00", "#D65F01"]) < 1
    assert min_distance(["#FF0000", "#00C000"], CVD["deuteranopia"]) < min_distance(["#FF0000", "#00C000"])


@pytest.mark.parametrize("label, key", [
    ("attnlrp", "attnlrp"), ("AttnLRP (qk)v", "attnlrp"), ("attnlrp q(kv)", "attnlrp"), ("cp-lrp-ah", "cp-lrp-ah"),
    ("CP-LRP [mask]", "cp-lrp"), ("LOO (layer 0)", "loo"), ("loo-zero", "loo-zero"), ("LRP(AH+LN)", "cp-lrp"),
    ("pa-lrp (reference)", "pa-lrp"), ("attnlrp-no-softmax", "attnlrp-no-softmax"), ("gist", None),
    ("one forward", None), ("cp-lrp-xyz", None),
])
def test_method_key_of_derived_labels(label, key):
    assert viz.method_key(label) == key


def test_method_color_unknown():
    assert viz.method_color("attnlrp (qk)v") == viz.METHOD_COLORS["attnlrp"]
    assert viz.method_color("one forward", default="#123456") == "#123456"
    with pytest.raises(ValueError, match="known methods"):
        viz.method_color("one forward")


def line_colours(ax):
    return {line.get_label(): matplotlib.colors.to_hex(line.get_color()).upper() for line in ax.lines}


def test_curves_keep_their_colour_when_a_method_is_missing():
    x = np.linspace(0, 1, 3)
    fig, axes = matplotlib.pyplot.subplots(1, 2)
    viz.plot_curves({m: (x, x) for m in ["gi", "ig", "cp-lrp", "attnlrp"]}, ax=axes[0], legend=False)
    viz.plot_curves({m: (x, x) for m in ["gi", "cp-lrp", "attnlrp", "one forward"]}, ax=axes[1], legend=False)
    a, b = line_colours(axes[0]), line_colours(axes[1])
    assert a["attnlrp"] == b["attnlrp"] == "#D55E00" and a["cp-lrp"] == b["cp-lrp"] == "#0072B2"
    assert b["one forward"] == viz.OTHER_COLORS[0]
    legend = viz.figure_legend(fig)
    assert [t.get_text() for t in legend.get_texts()] == ["gi", "ig", "cp-lrp", "attnlrp", "one forward"]
    assert all(ax.get_legend() is None for ax in axes) and len(fig.legends) == 1


def test_plot_by_layer_uses_method_colours():
    pre = pd.DataFrame({"layer": [0, 1, 0, 1], "method": ["cp-lrp"] * 2 + ["attnlrp"] * 2, "r": [0.1, 0.2, 0.3, 0.4],
                        "lo": [0.0, 0.1, 0.2, 0.3], "hi": [0.2, 0.3, 0.4, 0.5]})
    ax = viz.plot_by_layer(pre, y="r", low="lo", high="hi").axes[0]
    assert line_colours(ax) == {"cp-lrp": "#0072B2", "attnlrp": "#D55E00"}
    raw = pd.DataFrame({"layer": np.tile([0, 1], 10), "method": np.repeat(["gi", "attnlrp"], 10),
                        "r": np.random.default_rng(0).normal(size=20)})
    ax = viz.plot_by_layer(raw, y="r").axes[0]
    colours = {matplotlib.colors.to_hex(line.get_color()).upper() for line in ax.lines}
    assert {"#009E73", "#D55E00"} <= colours


# ----------------------------------------------------------------------------- NaN is not 0
def pixel(fig, ax, x, y):
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())
    px, py = ax.transData.transform((x, y))
    return img[int(img.shape[0] - py), int(px), :3]


def nan_notes(ax):
    return [t.get_text() for a in ax.artists if isinstance(a, matplotlib.legend.Legend) for t in a.get_texts()]


def test_token_heatmap_draws_nan_apart_from_zero():
    fig = viz.token_heatmap(list("abc"), {"LOO": [np.nan, 0.0, 1.0], "gi": [0.0, 0.0, 1.0]})
    ax = fig.axes[0]
    nan_px, zero_px = pixel(fig, ax, 0, 0), pixel(fig, ax, 1, 0)
    assert zero_px.min() > 240  # 0 is (near) white
    assert np.abs(nan_px.astype(int) - zero_px).max() > 20  # NaN is not
    assert nan_notes(ax) == ["NaN (undefined)"]
    assert len(ax.patches) == 1 and ax.patches[0].get_hatch()
    plain = viz.token_heatmap(list("ab"), {"gi": [0.0, 1.0]}).axes[0]
    assert nan_notes(plain) == [] and not plain.patches


def test_layer_map_draws_nan_apart_from_zero():
    data = np.array([[np.nan, 0.0], [1.0, -1.0]])
    fig = viz.layer_map(data, ["a", "b"])
    ax = fig.axes[0]
    nan_px, zero_px = pixel(fig, ax, 0.5, 0.5), pixel(fig, ax, 1.5, 0.5)
    assert zero_px.min() > 240 and np.abs(nan_px.astype(int) - zero_px).max() > 20
    assert nan_notes(ax) == ["NaN (undefined)"] and len(ax.patches) == 1 and ax.patches[0].get_hatch()
