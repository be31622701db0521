"""The static site (``make site``) and the Voila demo (``make demo``) in headless Chromium; used by
``tests/browser_check.py`` (``make test-browser``), which owns the browser and the cleanup.

* :func:`check_site` builds the site into the temporary folder, serves it on 127.0.0.1 and opens every page:
  no console error (SEVERE log entry: a failed request, a script error), every ``<img>`` loaded, the
  formulas typeset by the local MathJax without a math error, the index's status table (or its note) and
  one gallery image per figure; screenshot of the index.
* :func:`check_demo` serves ``app/demo.ipynb`` with Voila as ``make demo`` does (``app/demo.py``), waits
  for the explorer's heatmap (no console error on the way), types a sentence, picks another method and asserts that the heatmap changed each time and
  that no code is shown; screenshot of the app.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_SENTENCE = "the film is a total waste of time , but the soundtrack is lovely ."


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _severe(driver) -> list[str]:
    return [e["message"][:500] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _images(driver) -> list[list]:
    return driver.execute_script(
        "return [...document.images].map(i => [i.getAttribute('src').slice(0, 80), i.complete && i.naturalWidth > 0]);")


def check_site(driver, tmp: Path, screenshot: Path, helpers) -> dict:
    from lrp_utils import site

    out = site.build(tmp / "site")
    port = helpers.free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory",
                               str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        helpers.wait_for(lambda: _up(f"{base}/index.html"), 30, "the site's HTTP server")
        pages = ["index.html", *sorted(p.name for p in out.glob("[0-9][0-9]_*.html"))]
        assert len(pages) >= 7, pages
        found = {}
        for page in pages:
            driver.get_log("browser")  # drop what earlier pages logged
            driver.get(f"{base}/{page}")
            helpers.wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 60,
                             f"{page} to load")
            if page != "index.html":  # local MathJax: typeset, no math error
                helpers.wait_for(lambda: driver.execute_script(
                    "return !!(window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 "
                    "&& MathJax.Hub.queue.running === 0 && document.querySelector('.MathJax_MathML, .MathJax'))"),
                    90, f"MathJax to typeset {page}")
                bad = driver.execute_script("return document.querySelectorAll('.MathJax_Error, merror').length")
                assert bad == 0, f"{page}: {bad} MathJax errors"
            time.sleep(0.5)
            imgs = _images(driver)
            assert imgs and all(ok for _, ok in imgs), f"{page}: images missing or broken: {[s for s, ok in imgs if not ok]}"
            errors = _severe(driver)
            assert not errors, f"{page}: console errors: {errors}"
            found[page] = len(imgs)
        driver.get(f"{base}/index.html")
        helpers.wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 30, "the index")
        figures = [p for p in (ROOT / "figures").glob("[0-9][0-9]_*.png") if p.name not in site.SCREENSHOTS]
        assert found["index.html"] == len(figures), (found["index.html"], len(figures))
        has_claims = (ROOT / "figures" / "claims.csv").exists()
        selector = "table#claims tbody tr" if has_claims else "p.note"
        assert driver.execute_script(f"return document.querySelectorAll('{selector}').length") > 0, selector
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        helpers.log(f"site: {len(pages)} pages, no console errors; screenshot {screenshot}")
        return {"site pages": len(pages), "site images": sum(found.values()), "claims table": has_claims}
    finally:
        helpers.stop(helpers.family(server.pid))


def _view(driver):
    from selenium.webdriver.common.by import By

    views = driver.find_elements(By.CSS_SELECTOR, ".widget-html .lrp-explorer-view")
    return views[0] if views else None


def _heatmap(driver) -> tuple[str, tuple]:
    """(text of the explorer view, titles of its token spans = the relevance values)."""
    return driver.execute_script("""
        const v = document.querySelector('.widget-html .lrp-explorer-view');
        if (!v) return ['', []];
        return [v.textContent, [...v.querySelectorAll('span[title^="R = "]')].map(s => s.getAttribute('title'))];""")


def check_demo(driver, tmp: Path, screenshot: Path, helpers, timeout: float = 300) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_launcher", ROOT / "app" / "demo.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)  # the same command and environment as `make demo`
    port = helpers.free_port()
    env = launcher.environ({**os.environ, "LRP_DEMO_RECIPE": os.environ.get("LRP_DEMO_RECIPE", "quick"),
                            "LRP_UTILS_FIGURES": str(tmp / "figures"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")})
    cmd = launcher.command(port)
    logfile = open(tmp / "voila.log", "w")
    voila = subprocess.Popen(cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.perf_counter()
        helpers.wait_for(lambda: voila.poll() is not None or _up(f"http://127.0.0.1:{port}/api/kernelspecs")
                         or _up(f"http://127.0.0.1:{port}/voila/static/voila.js"), 90, "Voila to start", poll=1.0)
        if voila.poll() is not None:
            raise RuntimeError(f"Voila exited with {voila.returncode}; see {tmp / 'voila.log'}")
        driver.get_log("browser")
        driver.get(f"http://127.0.0.1:{port}/")
        helpers.wait_for(lambda: len(_heatmap(driver)[1]) > 0, timeout, "the explorer's heatmap in the Voila app", poll=1.0)
        started = time.perf_counter() - t0
        text0, spans0 = _heatmap(driver)
        assert "| attnlrp |" in text0, text0[:300]
        shown = driver.find_elements(By.CSS_SELECTOR, ".jp-InputArea-editor, .jp-InputArea .cm-editor")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert not shown and "load(" not in body and "import" not in body, "the app shows code"
        # type a sentence; the text box updates on leaving it (continuous_update=False)
        box = driver.find_element(By.CSS_SELECTOR, ".widget-textarea textarea")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(DEMO_SENTENCE)
        box.send_keys(Keys.TAB)
        helpers.wait_for(lambda: "waste" in _heatmap(driver)[0], 120, "the heatmap of the typed sentence")
        text1, spans1 = _heatmap(driver)
        assert spans1 != spans0 and len(spans1) > len(spans0), (len(spans0), len(spans1))
        # another method: the same tokens, other relevance values
        panel = _view(driver).find_element(By.XPATH, "ancestor::div[contains(@class, 'widget-vbox')][1]")
        selects = panel.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")
        assert len(selects) == 3, f"expected model, method and layer dropdowns, found {len(selects)}"
        Select(selects[1]).select_by_visible_text("cp-lrp")
        helpers.wait_for(lambda: "| cp-lrp |" in _heatmap(driver)[0], 120, "the heatmap after choosing cp-lrp")
        text2, spans2 = _heatmap(driver)
        assert len(spans2) == len(spans1) and spans2 != spans1, "the relevance did not change with the method"
        errors = _severe(driver)
        assert not errors, f"console errors in the app: {errors}"
        driver.execute_script("window.scrollTo(0, 0);")
        time.sleep(1.0)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        helpers.log(f"demo: heatmap after {started:.0f} s, re-rendered after typing and after a method change; "
                    f"screenshot {screenshot}")
        return {"demo start s": round(started, 1), "demo tokens": len(spans2)}
    finally:
        helpers.stop(helpers.family(voila.pid))
        logfile.close()
