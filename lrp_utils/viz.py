"""Display of relevance: HTML token spans, heatmaps, curves, and the project's figure style.

This is the one place where relevance is normalised, and only for display: every function takes
raw relevance and says in its colour bar / tooltip which scaling it applied. Plain matplotlib and
seaborn (no LaTeX, ``text.usetex`` off), headless-safe (Agg when there is no display), and no
``plt.show()``: functions return the Figure. Colours: positive = red, negative = blue, 0 = white;
NaN (undefined, e.g. LOO at the read-out position) = hatched grey with a "NaN (undefined)" key.

Methods have one colour and one marker each, everywhere (:data:`METHOD_COLORS`, :func:`method_color`,
:func:`method_style`), and a figure gets one legend (:func:`figure_legend`).
"""
from __future__ import annotations

import html
import os
import sys
from pathlib import Path

import matplotlib

if not os.environ.get("DISPLAY") and "MPLBACKEND" not in os.environ and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # headless: never try to open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from lrp_utils.palette import (METHOD_ALIASES, METHOD_COLORS, METHOD_MARKERS, NAN_COLOR, NAN_LABEL,  # noqa: E402,F401
                                OTHER_COLORS, figure_legend, label_styles, mark_nan, method_color, method_key,
                                method_style)
from lrp_utils.paths import figure_path  # noqa: E402

CMAP = "RdBu_r"
POS_RGB, NEG_RGB = (255, 0, 0), (0, 0, 255)  # HTML colours at +max / -max (mirror images)
_NORMALIZE = ("max-abs", "row", None)
# GPT-2 byte-level and SentencePiece markers -> readable text (⏎ shows a newline, ⇥ a tab)
_MARKERS = {"Ġ": " ", "▁": " ", "Ċ": "⏎", "ĉ": "⇥", "<0x0A>": "⏎", "<0x09>": "⇥", "\n": "⏎", "\t": "⇥"}
_SPACE_MARKERS = ("Ġ", "▁")


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------- tokens and HTML
def clean_token(tok: str) -> str:
    """Readable text of one sub-word token.

    BERT continuation pieces lose their ``##`` (``"##ing" -> "ing"``); GPT-2/LLaMA byte-level
    ``Ġ`` and SentencePiece ``▁`` become a space, ``Ċ`` / ``<0x0A>`` / ``\\n`` become ``⏎`` and
    tabs ``⇥``. Special tokens such as ``[CLS]`` are returned unchanged.
    """
    if tok.startswith("##") and len(tok) > 2:
        return tok[2:]
    if tok in _MARKERS:
        return _MARKERS[tok]
    for marker, text in _MARKERS.items():
        if len(marker) == 1:
            tok = tok.replace(marker, text)
    return tok


def _uses_space_markers(tokens) -> bool:
    return any(m in t for t in tokens for m in _SPACE_MARKERS)


def _scale(values: np.ndarray, normalize) -> tuple[np.ndarray, str]:
    """Scale ``values`` ``[..., seq]`` for display; returns ``(scaled, description)``.

    ``"max-abs"``: divide by the global max |R|; ``"row"``: each row by its own max |R|; a number:
    divide by it; ``None``: unchanged. A zero maximum leaves zeros.
    """
    if normalize is None:
        return values, "relevance"
    if isinstance(normalize, (int, float)) and not isinstance(normalize, bool):
        return values / float(normalize), f"relevance / {normalize:g}"
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE} or a number, got {normalize!r}")
    axis = None if normalize == "max-abs" or values.ndim == 1 else -1
    m = np.nanmax(np.abs(values), axis=axis, keepdims=True) if values.size else np.ones(1)
    m = np.where(m > 0, m, 1.0)
    label = "relevance / max |R|" if axis is None else "relevance / row max |R|"
    return values / m, label


def relevance_color(v: float) -> str:
    """Hex background colour for a scaled value ``v`` in [-1, 1]: white at 0, red +1, blue -1.

    Values are clipped to [-1, 1]; NaN gives white. ``relevance_color(-v)`` is ``relevance_color(v)``
    with the red and blue channels swapped.
    """
    v = 0.0 if not np.isfinite(v) else float(np.clip(v, -1.0, 1.0))
    target = POS_RGB if v >= 0 else NEG_RGB
    rgb = [round(255 + (c - 255) * abs(v)) for c in target]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _span(text: str, value: float, raw: float) -> str:
    fg = "#ffffff" if np.isfinite(value) and abs(value) > 0.6 else "#000000"
    style = f"background-color:{relevance_color(value)};color:{fg};padding:1px 2px;border-radius:3px"
    return f'<span style="{style}" title="R = {raw:.4g}">{html.escape(text, quote=True)}</span>'


def _pieces(tokens, values, raw):
    """HTML of each token, with the separating whitespace kept outside the coloured spans."""
    markers = _uses_space_markers(tokens)
    out = []
    for i, (tok, v, r) in enumerate(zip(tokens, values, raw)):
        text = clean_token(tok)
        body = text.lstrip(" ") if markers else text
        if markers:  # byte-level / SentencePiece: the token carries its own leading space
            sep = " " if body != text and i > 0 else ""
        else:  # WordPiece: words are space-separated, ## pieces attach to the previous token
            sep = "" if i == 0 or tok.startswith("##") else " "
        newline = "<br>" if "⏎" in body else ""
        out.append(sep + _span(body or "␣", v, r) + newline)
    return out


def token_html(tokens, relevance, normalize="max-abs", title: str | None = None) -> str:
    """Tokens as inline-styled HTML spans coloured by relevance (render with ``IPython.display.HTML``).

    Args:
        tokens: ``[seq]`` token strings as the tokenizer returns them (markers are cleaned here).
        relevance: ``[seq]`` raw relevance.
        normalize: ``"max-abs"`` (divide by max |R|, default), a number to divide by (to share a
            scale across examples), or ``None`` (values used as they are, clipped to [-1, 1]).
        title: optional heading; the applied scaling is appended to it.

    The colour scale is symmetric about 0 (red +, blue -, white 0); each span's tooltip holds the
    raw value. BERT ``##`` pieces are joined to the previous token; byte-level/SentencePiece
    tokens are joined using their own space markers.
    """
    raw = _np(relevance)
    if raw.ndim != 1 or len(raw) != len(tokens):
        raise ValueError(f"relevance must be 1-D with one value per token ({len(tokens)}), got {raw.shape}")
    values, label = _scale(raw, normalize)
    head = "" if title is None else f"<div style=\"font-weight:bold\">{html.escape(title)}</div>"
    note = f"<div style=\"font-size:80%;color:#666\">colour: {html.escape(label)}</div>"
    body = "".join(_pieces(list(tokens), values, raw))
    return f"<div style=\"line-height:1.9\">{head}<div>{body}</div>{note}</div>"


def show_tokens(tokens, relevance, normalize="max-abs", title: str | None = None) -> None:
    """Display :func:`token_html` in a notebook (Jupyter renders the HTML)."""
    from IPython.display import HTML, display

    display(HTML(token_html(tokens, relevance, normalize=normalize, title=title)))


def _tick(tok: str) -> str:
    """Axis label of a token: cleaned, stripped, ``$`` escaped so matplotlib shows it literally."""
    text = tok if tok.startswith("##") else clean_token(tok).strip() or "␣"
    return text.replace("$", r"\$")


# --------------------------------------------------------------------------- heatmaps
def _rows(relevance_rows, row_labels):
    """``(labels, [m, seq] array)`` from a dict name -> ``[seq]`` or a 2-D array with labels."""
    if isinstance(relevance_rows, dict):
        labels = list(relevance_rows)
        data = np.stack([_np(v) for v in relevance_rows.values()]) if labels else np.zeros((0, 0))
    else:
        data = _np(relevance_rows)
        data = data[None] if data.ndim == 1 else data
        labels = list(row_labels) if row_labels is not None else [str(i) for i in range(len(data))]
    if data.ndim != 2 or len(labels) != len(data):
        raise ValueError(f"need a [rows, seq] array with one label per row, got {data.shape}, {len(labels)} labels")
    return labels, data


def _new_ax(ax, size):
    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=size)


def token_heatmap(tokens, relevance_rows, row_labels=None, ax=None, title: str | None = None,
                  normalize="row"):
    """One heatmap row per method, tokens along x, ``RdBu_r`` centred on 0.

    Args:
        tokens: ``[seq]`` token strings.
        relevance_rows: dict ``method -> [seq]`` raw relevance, or a ``[m, seq]`` array with
            ``row_labels``.
        normalize: ``"row"`` (default: each row by its own max |R|), ``"max-abs"`` (one shared
            max), a number, or ``None`` (raw values, colour limits +-max |R|). The colour bar says which.
    NaN cells (e.g. LOO at the read-out position) are hatched grey, with a "NaN (undefined)" key.
    Returns the Figure (one image, ``m`` rows x ``seq`` columns).
    """
    labels, data = _rows(relevance_rows, row_labels)
    if data.shape[1] != len(tokens):
        raise ValueError(f"rows have {data.shape[1]} values but there are {len(tokens)} tokens")
    scaled, label = _scale(data, normalize)
    lim = float(np.nanmax(np.abs(scaled))) if scaled.size else 1.0
    lim = lim if lim > 0 else 1.0
    fig, ax = _new_ax(ax, (max(4.0, 0.45 * len(tokens) + 2), 0.5 * len(labels) + 1.6))
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad=NAN_COLOR)
    im = ax.imshow(scaled, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    mark_nan(ax, scaled, -0.5)
    ax.set_xticks(range(len(tokens)), [_tick(t) for t in tokens], rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("token")
    ax.set_ylabel("method")
    ax.grid(False)
    fig.colorbar(im, ax=ax, label=label, fraction=0.05, pad=0.02)
    if title:
        ax.set_title(title)
    return fig


def layer_map(relevance_layers, tokens, ax=None, title: str | None = None, normalize=None):
    """Seaborn heatmap of relevance per layer (rows, layer 0 = input at the bottom) and token.

    Args:
        relevance_layers: ``[L + 1, seq]`` raw relevance per layer and position.
        tokens: ``[seq]`` token strings.
        normalize: ``None`` (raw, default), ``"max-abs"``, ``"row"`` (each layer by its own max),
            or a number. The colour scale is symmetric about 0 either way.
    NaN cells are hatched grey, with a "NaN (undefined)" key.
    Returns the Figure.
    """
    data = _np(relevance_layers)
    if data.ndim != 2 or data.shape[1] != len(tokens):
        raise ValueError(f"relevance_layers must be [L+1, {len(tokens)}], got {data.shape}")
    scaled, label = _scale(data, normalize)
    lim = float(np.nanmax(np.abs(scaled))) if np.isfinite(scaled).any() else 1.0
    lim = lim if lim > 0 else 1.0
    fig, ax = _new_ax(ax, (max(4.0, 0.45 * len(tokens) + 2), 0.35 * len(data) + 1.8))
    sns.heatmap(scaled, ax=ax, cmap=CMAP, vmin=-lim, vmax=lim,  # symmetric limits centre 0
                xticklabels=[_tick(t) for t in tokens], yticklabels=list(range(len(data))),
                cbar_kws={"label": label})
    mark_nan(ax, scaled, 0.0)
    ax.invert_yaxis()
    ax.tick_params(axis="y", rotation=0)
    ax.set_xlabel("token")
    ax.set_ylabel("layer")
    if title:
        ax.set_title(title)
    return fig


def image_heatmap(relevance, image=None, ax=None, title: str | None = None, alpha: float = 0.6):
    """Relevance over an image (vision models): ``RdBu_r`` with limits +-max |R| (0 = white).

    Args:
        relevance: ``[H, W]``, e.g. ``exp.pixels[0]``, or a patch grid such as
            ``exp.tokens[0, 1:].reshape(rows, cols)`` (drawn as blocks over the image).
        image: optional ``[C, H, W]`` or ``[H, W, C]`` image (any value range; shown in grey,
            rescaled to [0, 1]) under the heatmap, which is then drawn with transparency ``alpha``.
    Returns the Figure.
    """
    data = _np(relevance)
    if data.ndim != 2:
        raise ValueError(f"relevance must be a 2-D [H, W] map, got shape {data.shape}")
    lim = float(np.nanmax(np.abs(data))) or 1.0
    fig, ax = _new_ax(ax, (4.2, 3.6))
    extent = None
    if image is not None:
        img = _np(image)
        img = img.mean(0) if img.ndim == 3 and img.shape[0] in (1, 3) else img.mean(-1) if img.ndim == 3 else img
        span = float(img.max() - img.min()) or 1.0
        ax.imshow((img - img.min()) / span, cmap="gray", vmin=0, vmax=1)
        extent = (-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5)
    im = ax.imshow(data, cmap=CMAP, vmin=-lim, vmax=lim, alpha=alpha if image is not None else 1.0,
                   interpolation="nearest", extent=extent)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, label="relevance", fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- curves
def plot_curves(curves: dict, ax=None, xlabel: str = "fraction of tokens perturbed",
                ylabel: str = "score", title: str | None = None, legend: bool = True):
    """Mean curves with confidence bands, one line per method, in the method's colour and marker.

    Args:
        curves: ``method -> (fractions [F], mean [F], low [F], high [F])`` (e.g.
            ``CurveResult.band()``), or ``(fractions, mean)`` for a line without band.
        legend: draw a legend on this axes. For several panels pass ``legend=False`` and call
            :func:`figure_legend` once.
    Returns the Figure.
    """
    fig, ax = _new_ax(ax, (5.5, 3.8))
    styles = label_styles(curves)
    for name, parts in curves.items():
        if len(parts) not in (2, 4):
            raise ValueError(f"curve {name!r}: expected (fractions, mean[, low, high]), got {len(parts)} parts")
        x, y = _np(parts[0]), _np(parts[1])
        ax.plot(x, y, markersize=3.5, label=name, **styles[name])
        if len(parts) == 4:
            ax.fill_between(x, _np(parts[2]), _np(parts[3]), color=styles[name]["color"], alpha=0.2, lw=0)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    if curves and legend:
        ax.legend(frameon=False)
    return fig


def plot_by_layer(df, x: str = "layer", y: str = "pearson", hue: str = "method", low: str | None = None,
                  high: str | None = None, ax=None, ylabel: str | None = None, title: str | None = None,
                  seed: int = 0, legend: bool = True):
    """Line per ``hue`` group across layers with a 95% band, methods in their colour and marker.

    Args:
        df: long DataFrame. With ``low``/``high`` column names, one row per (hue, x) holding the mean
            in ``y`` and a precomputed interval; otherwise one row per example and seaborn's
            seeded 95% bootstrap band over them.
        legend: draw a legend on this axes (``False`` for panels sharing one :func:`figure_legend`).
    Returns the Figure.
    """
    fig, ax = _new_ax(ax, (5.5, 3.8))
    styles = label_styles([str(h) for h in df[hue].unique()])
    if low is None or high is None:
        d = df.assign(**{hue: df[hue].astype(str)})
        sns.lineplot(data=d, x=x, y=y, hue=hue, style=hue, errorbar=("ci", 95), seed=seed, ax=ax, dashes=False,
                     palette={k: v["color"] for k, v in styles.items()},
                     markers={k: v["marker"] for k, v in styles.items()}, legend=legend)
    else:
        for name, g in df.sort_values(x).groupby(hue, sort=False):
            st = styles[str(name)]
            ax.plot(g[x], g[y], label=str(name), **st)
            ax.fill_between(g[x], g[low], g[high], color=st["color"], alpha=0.2, lw=0)
    if legend:
        ax.legend(title=hue, frameon=False)
    ax.set(xlabel=x, ylabel=ylabel or y)
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- style and saving
def set_style() -> None:
    """The shared look: seaborn whitegrid, readable font sizes, dpi 120, no LaTeX."""
    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams.update({
        "figure.dpi": 120, "savefig.dpi": 120, "text.usetex": False, "font.size": 10,
        "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
        "legend.fontsize": 9, "svg.hashsalt": "lrp_utils",
    })


_METADATA = {  # drop timestamps and version strings so saved bytes are reproducible
    ".png": {"Software": None},
    ".pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    ".svg": {"Creator": None, "Date": None},
}


def save(fig, name: str, **kwargs) -> Path:
    """Write ``fig`` to ``lrp_utils.paths.figure_path(name)`` reproducibly; returns the path.

    Uses ``bbox_inches="tight"`` and strips software/date metadata, so saving the same figure
    twice gives identical bytes. Extra keyword arguments go to ``Figure.savefig``.
    """
    path = figure_path(name)
    meta = _METADATA.get(path.suffix.lower())
    kwargs = {"bbox_inches": "tight", "dpi": 120, **kwargs}
    with plt.rc_context({"svg.hashsalt": "lrp_utils"}):
        fig.savefig(path, metadata=meta, **kwargs)
    return path
