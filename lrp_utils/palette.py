"""One colour and one marker per method, everywhere; one legend per figure; NaN drawn apart from 0.

Re-exported by :mod:`lrp_utils.viz`. Every figure of the collection takes its method colours from
:data:`METHOD_COLORS` (through :func:`method_color` / :func:`method_style`, which also resolve derived
labels such as ``"attnlrp (qk)v"`` or ``"LOO (layer 0)"``) and draws one legend with
:func:`figure_legend`::

    fig, axes = plt.subplots(1, 2)
    viz.plot_curves(curves_a, ax=axes[0], legend=False)
    viz.plot_curves(curves_b, ax=axes[1], legend=False)
    viz.figure_legend(fig)                       # one legend, above the panels, every method once
    ax.bar(x, h, color=viz.method_color("cp-lrp"))
"""
from __future__ import annotations

import numpy as np
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

#: one colour per method / baseline, used by every figure (Okabe-Ito and Paul Tol colours; every pair
#: stays apart under simulated protanopia, deuteranopia and tritanopia, tested in tests/test_viz.py)
METHOD_COLORS = {
    "attnlrp": "#D55E00", "pa-lrp": "#CC79A7", "attnlrp-no-softmax": "#882255", "attnlrp-full-value": "#E69F00",
    "cp-lrp": "#0072B2", "cp-lrp-ah": "#56B4E9", "pa-cp-lrp": "#332288",
    "gi": "#009E73", "ig": "#999933", "rollout": "#DDCC77", "random": "#BBBBBB",
    "loo": "#000000", "loo-zero": "#777777", "loo-one": "#8C564B",
}
#: one marker per method, so lines stay apart without colour too
METHOD_MARKERS = {
    "attnlrp": "o", "pa-lrp": "P", "attnlrp-no-softmax": "v", "attnlrp-full-value": "^", "cp-lrp": "s",
    "cp-lrp-ah": "D", "pa-cp-lrp": "X", "gi": "<", "ig": ">", "rollout": "*", "random": "x",
    "loo": "h", "loo-zero": "p", "loo-one": "d",
}
#: other spellings of the same methods (lower case)
METHOD_ALIASES = {
    "lrp(ah)": "cp-lrp-ah", "lrp (ah)": "cp-lrp-ah", "lrp(ah+ln)": "cp-lrp", "lrp (ah+ln)": "cp-lrp",
    "cp": "cp-lrp", "gradient x input": "gi", "integrated gradients": "ig", "leave-one-out": "loo",
    "loo-mask": "loo", "attention rollout": "rollout",
}
#: colours for curves that are not methods (never used by a method)
OTHER_COLORS = ("#4D4D4D", "#A6CEE3", "#B2DF8A", "#FB9A99", "#FDBF6F", "#CAB2D6")
NAN_COLOR, NAN_HATCH, NAN_LABEL = "#D9D9D9", "////", "NaN (undefined)"


def method_key(name) -> str | None:
    """The method a label names: ``"AttnLRP (qk)v" -> "attnlrp"``, ``"LOO (layer 0)" -> "loo"``,
    ``"LRP(AH+LN)" -> "cp-lrp"``; ``None`` if it names none. A label names a method when it is the
    method (or an alias), or starts with it followed by a space or punctuation other than ``-``."""
    s = str(name).strip().lower()
    s = METHOD_ALIASES.get(s, s)
    if s in METHOD_COLORS:
        return s
    for m in sorted(METHOD_COLORS, key=len, reverse=True):
        if s.startswith(m) and not (s[len(m)].isalnum() or s[len(m)] == "-"):
            return m
    return None


def method_color(name, default: str | None = None) -> str:
    """Hex colour of a method or a label derived from one (see :func:`method_key`). Unknown names give
    ``default``, or raise ``ValueError`` naming the known methods when no default is given."""
    key = method_key(name)
    if key is not None:
        return METHOD_COLORS[key]
    if default is None:
        raise ValueError(f"no colour for {name!r}; known methods: {', '.join(METHOD_COLORS)}")
    return default


def method_style(name, i: int = 0) -> dict:
    """``{"color", "marker"}`` for a line of ``name``; a label that names no method gets the ``i``-th
    of :data:`OTHER_COLORS` and a plain marker."""
    key = method_key(name)
    if key is None:
        return {"color": OTHER_COLORS[i % len(OTHER_COLORS)], "marker": "."}
    return {"color": METHOD_COLORS[key], "marker": METHOD_MARKERS[key]}


def label_styles(labels) -> dict:
    """``{label: style}`` with non-method labels numbered in order of appearance."""
    others = [lab for lab in dict.fromkeys(labels) if method_key(lab) is None]
    return {lab: method_style(lab, others.index(lab) if lab in others else 0) for lab in dict.fromkeys(labels)}


def figure_legend(fig, methods=None, title: str | None = None, ncol: int | None = None, **kwargs):
    """Draw the figure's one legend, above the panels, and remove the panels' own legends.

    Args:
        methods: labels to show, in order; ``None`` collects the labelled artists of every panel (each
            label once). A label no panel drew gets a line in its :func:`method_style`.
        kwargs: passed to ``Figure.legend``.
    Returns the Legend (``None`` when there is nothing to show).
    """
    found = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    labels = list(found) if methods is None else [str(m) for m in methods]
    if not labels:
        return None
    styles = label_styles(labels)
    handles = [found[lab] if lab in found else Line2D([], [], lw=1.5, markersize=5, **styles[lab]) for lab in labels]
    top = max((ax.get_position().y1 for ax in fig.axes), default=1.0)
    opts = dict(loc="lower center", bbox_to_anchor=(0.5, top), frameon=False, ncol=ncol or min(len(labels), 6))
    return fig.legend(handles, labels, title=title, **{**opts, **kwargs})


def mark_nan(ax, data: np.ndarray, offset: float) -> None:
    """Hatched grey boxes over the NaN cells of a ``[rows, cols]`` heatmap whose cell ``(i, j)`` spans
    ``[j + offset, j + offset + 1] x [i + offset, i + offset + 1]``, and a "NaN (undefined)" key."""
    rows, cols = np.nonzero(np.isnan(data))
    for i, j in zip(rows, cols):
        ax.add_patch(Rectangle((j + offset, i + offset), 1, 1, facecolor=NAN_COLOR, edgecolor="#808080",
                               hatch=NAN_HATCH, lw=0, zorder=3))
    if len(rows):
        key = Patch(facecolor=NAN_COLOR, edgecolor="#808080", hatch=NAN_HATCH, label=NAN_LABEL)
        note = ax.add_artist(Legend(ax, [key], [NAN_LABEL], loc="lower left", bbox_to_anchor=(1.0, 1.0),
                                    frameon=False, fontsize=8, handlelength=1.4, borderaxespad=0.2))
        note.set_clip_on(False)  # outside the panel, and counted by bbox_inches="tight"
