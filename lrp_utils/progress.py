"""Progress bars: widgets in an interactive Jupyter session, one plain-text line per loop when headless.

Use ``from lrp_utils.progress import tqdm`` instead of ``tqdm.auto``. The mode comes from the environment
variable ``LRP_UTILS_PROGRESS``:

* ``"text"``: headless runs (papermill via ``python -m lrp_utils.notebooks``, ``make test``, CI). Nothing is
  drawn while the loop runs; when it ends, one ASCII line without timings, e.g.
  ``explaining: 100%|##########| 7/7``. Committed notebook outputs then hold a final, deterministic line
  instead of a frozen widget at "0%". Bars with ``leave=False`` print nothing.
* ``"widget"`` (or unset outside CI): ``tqdm.auto``, i.e. a widget in JupyterLab and a live text bar in a
  terminal.
* ``"off"``: no bars.

Unset with ``CI`` set in the environment counts as ``"text"``.
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.std import tqdm as _std_tqdm

ENV = "LRP_UTILS_PROGRESS"
MODES = ("text", "widget", "off")
TEXT_FORMAT = "{desc}: {percentage:3.0f}%|{bar:10}| {n_fmt}/{total_fmt}"
TEXT_FORMAT_NO_TOTAL = "{desc}: {n_fmt} {unit}"


def mode() -> str:
    """The progress mode from the environment (see the module docstring)."""
    value = os.environ.get(ENV, "").strip().lower()
    if not value:
        return "text" if os.environ.get("CI") else "widget"
    if value not in MODES:
        raise ValueError(f"{ENV} must be one of {MODES}, got {value!r}")
    return value


class TextBar(_std_tqdm):
    """A tqdm bar that draws only once, when it closes: one ASCII line, no rate or elapsed time."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("ascii", True)
        kwargs["delay"] = float("inf")  # never draw while running
        total = kwargs.get("total", args[1] if len(args) > 1 else None)
        if total is None and args and hasattr(args[0], "__len__"):
            total = len(args[0])
        kwargs.setdefault("bar_format", TEXT_FORMAT if total else TEXT_FORMAT_NO_TOTAL)
        super().__init__(*args, **kwargs)

    def close(self):
        if not self.disable and self.leave is not False:
            self.delay = 0  # the final line is drawn by tqdm's own close
        super().close()


def tqdm(*args, **kwargs):
    """A tqdm bar for the current :func:`mode`; takes tqdm's arguments (``iterable``, ``desc``, ``total``,
    ``disable``, ``leave``...)."""
    current = mode()
    if current == "off":
        kwargs["disable"] = True
    return TextBar(*args, **kwargs) if current == "text" else _auto_tqdm(*args, **kwargs)
