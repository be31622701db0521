"""Where the project keeps its data, caches and figures.

Everything is resolved from the repository root (the folder holding ``pyproject.toml``), so
notebooks and scripts never hard-code a machine path. Two environment variables override it:

* ``LRP_UTILS_CACHE``: folder for trained checkpoints and converted models (default ``<root>/data/cache``).
* ``LRP_UTILS_FIGURES``: folder the notebooks write their PNG/CSV files to (default ``<root>/figures``).
"""
from __future__ import annotations

import os
from pathlib import Path


def _find_root() -> Path:
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "lrp_utils").is_dir():
            return folder
    return Path.home() / ".lrp_utils"  # installed without the repository: keep caches in the home folder


ROOT: Path = _find_root()
DATA_DIR: Path = ROOT / "data"


def cache_dir() -> Path:
    """Folder for git-ignored caches (trained checkpoints, float32 model copies); created on demand."""
    path = Path(os.environ.get("LRP_UTILS_CACHE", DATA_DIR / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir() -> Path:
    """Folder for the figures and tables the notebooks write; created on demand."""
    path = Path(os.environ.get("LRP_UTILS_FIGURES", ROOT / "figures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def figure_path(name: str) -> Path:
    """Path of a figure file, e.g. ``figure_path("03_toy.png")``."""
    return figures_dir() / name
