"""Run the numbered notebooks headlessly with papermill: ``python -m lrp_utils.notebooks``.

* ``run --full`` (``make reproduce``): execute every ``notebooks/NN_*.ipynb`` in place, in order,
  printing which notebook runs and how long it took; the notebooks rewrite ``figures/``.
* ``prepare --quick --out DIR`` (``make test``): write copies with the ``quick=True`` parameter
  injected (not executed) for nbval to execute and check.
* ``readme [--check]`` (``make reproduce``, after the notebooks): rewrite the README's generated sections
  (reproduction status, gallery captions) from ``figures/claims.csv`` and the figure CSVs
  (:mod:`lrp_utils.readme`); ``--check`` only reports whether the README is current (exit 1 if not).

``run`` executes headless, so it sets ``LRP_UTILS_PROGRESS=text`` (plain-text progress bars, see
:mod:`lrp_utils.progress`) for the kernels it starts; ``make test`` sets it for nbval's kernels.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm

from . import progress, readme
from .paths import ROOT


def notebooks(pattern: str = "[0-9][0-9]_*.ipynb") -> list[Path]:
    return sorted((ROOT / "notebooks").glob(pattern))


def headless() -> None:
    """Plain-text progress bars in the kernels this process starts (they inherit the environment)."""
    os.environ[progress.ENV] = "text"


def run(quick: bool, only: str | None = None) -> None:
    headless()
    total = time.perf_counter()
    for nb in notebooks(f"{only}*.ipynb" if only else "[0-9][0-9]_*.ipynb"):
        print(f"== {nb.name} ({'quick' if quick else 'full'} mode) ...", flush=True)
        t0 = time.perf_counter()
        pm.execute_notebook(str(nb), str(nb), parameters={"quick": quick}, cwd=str(nb.parent),
                            progress_bar=False, kernel_name="python3")
        scrub(nb)
        print(f"   done in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"all notebooks done in {time.perf_counter() - total:.0f} s")


def scrub(path: Path) -> None:
    """Keep the machine out of a committed notebook: papermill's ``input_path`` / ``output_path``
    metadata become paths relative to the repository root, and any output text naming the root
    (a returned figure path, say) names it relative to the root too."""
    nb = nbformat.read(path, as_version=4)
    root = str(ROOT) + "/"
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if isinstance(meta.get(key), str):
            meta[key] = meta[key].replace(root, "")
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = out["text"].replace(root, "")
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    out["data"][mime] = value.replace(root, "")
    nbformat.write(nb, path)


def prepare(out: Path, quick: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for nb in notebooks():
        pm.execute_notebook(str(nb), str(out / nb.name), parameters={"quick": quick},
                            prepare_only=True, kernel_name="python3")


def readme_command(check: bool) -> int:
    """``readme``: rewrite (or with ``check`` only test) the README's generated sections."""
    if check:
        ok = readme.is_current()
        print("README.md is current" if ok else "README.md differs from what figures/*.csv generate; "
              "run: python -m lrp_utils.notebooks readme")
        return 0 if ok else 1
    print("README.md " + ("rewritten" if readme.write() else "already current"))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["run", "prepare", "readme"])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small CI-sized runs")
    mode.add_argument("--full", action="store_true", help="the full experiments (default)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "notebooks")
    p.add_argument("--only", help="prefix of the notebooks to run, e.g. 03")
    p.add_argument("--check", action="store_true", help="readme: exit 1 if the README is not current")
    a = p.parse_args(argv)
    if a.command == "readme":
        return readme_command(a.check)
    if a.command == "run":
        run(quick=a.quick, only=a.only)
    else:
        prepare(a.out, quick=a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
