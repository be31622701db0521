"""Run the numbered notebooks headlessly with papermill: ``python -m lrp_utils.notebooks``.

* ``run --full`` (``make reproduce``): execute every ``notebooks/NN_*.ipynb`` in place, in order,
  printing which notebook runs and how long it took; the notebooks rewrite ``figures/``.
* ``prepare --quick --out DIR`` (``make test``): write copies with the ``quick=True`` parameter
  injected (not executed) for nbval to execute and check.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm

from .paths import ROOT


def notebooks(pattern: str = "[0-9][0-9]_*.ipynb") -> list[Path]:
    return sorted((ROOT / "notebooks").glob(pattern))


def run(quick: bool, only: str | None = None) -> None:
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["run", "prepare"])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small CI-sized runs")
    mode.add_argument("--full", action="store_true", help="the full experiments (default)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "notebooks")
    p.add_argument("--only", help="prefix of the notebooks to run, e.g. 03")
    a = p.parse_args(argv)
    if a.command == "run":
        run(quick=a.quick, only=a.only)
    else:
        prepare(a.out, quick=a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
