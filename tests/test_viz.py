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
