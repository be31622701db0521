"""Serve the explorer app (``app/demo.ipynb``) with Voila: ``python app/demo.py [--port 8866]`` (``make demo``).

Voila runs the notebook and shows its outputs only (no code). Two settings keep the app offline and its
console clean: the ``lrp`` template (``app/jupyter/voila/templates/lrp``: Voila's lab template without its
Font Awesome CDN links; the icons come with Voila's bundle), and leaving out the JupyterLab front-end
extensions of the environment that do not load in Voila's page (nbgrader's, notebook's, Voila's own
JupyterLab preview); ipywidgets' extension stays.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent
#: JupyterLab front-end extensions of the environment that fail in Voila's page (built for another
#: JupyterLab); ipywidgets' own extension stays
DENY = ["@jupyter/nbgrader", "@jupyter-notebook/lab-extension", "@voila-dashboards/jupyterlab-preview"]


def command(port: int = 8866) -> list[str]:
    return [sys.executable, "-m", "voila", str(APP / "demo.ipynb"), "--no-browser", f"--port={port}",
            "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", "--template=lrp",
            *(f"--VoilaConfiguration.extension_denylist={name}" for name in DENY)]


def environ(base: dict | None = None) -> dict:
    """``base`` (default ``os.environ``) with ``app/jupyter`` first on ``JUPYTER_PATH`` (the template)."""
    env = dict(os.environ if base is None else base)
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(APP / "jupyter"), env.get("JUPYTER_PATH", "")) if p)
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8866)
    a = p.parse_args(argv)
    cmd = command(a.port)
    print(f"serving the demo on http://127.0.0.1:{a.port}/ (Ctrl-C stops it)", flush=True)
    os.execve(cmd[0], cmd, environ())


if __name__ == "__main__":
    sys.exit(main())
