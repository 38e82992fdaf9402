"""The review page stays usable on large scans: render and load time, 10,000 flagged rows
against a small scan, measured in one run.

    python benchmarks/report_bench.py

Both scans are in memory (``poisonscan.scan``) on Gaussian vectors with a planted shifted
group in class 0; the pages are rendered with ``result.report_html()`` and opened in headless
Chromium (tests/browser.py). Load time: from navigation until the page's script has run
(``document.body.dataset.ready``), median of 5 loads. Writes the "report" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from benchmarks.common import machine, write_section  # noqa: E402
from tests.browser import Chromium  # noqa: E402

from poisonscan import scan  # noqa: E402

LOADS = 5


def planted(n: int, flagged: int, seed: int = 7, d: int = 16):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, 3, n)
    poison = rng.choice(np.flatnonzero(y == 0), flagged, replace=False)
    X[poison, 0] += 12.0
    return X, y


def measure(browser, name: str, n: int, flagged: int, folder: str) -> dict:
    X, y = planted(n, flagged)
    result = scan(X, y, seed=0)
    t = time.perf_counter()
    page_html = result.report_html()
    render_s = time.perf_counter() - t
    path = os.path.join(folder, f"{name}.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page_html)
    loads, cards, problems = [], None, []
    for _ in range(LOADS):
        t = time.perf_counter()
        page = browser.open("file://" + path)
        while page.eval("document.body.dataset.ready") != "1":
            time.sleep(0.01)
        loads.append(time.perf_counter() - t)
        cards = page.eval("document.querySelectorAll('article.card.flagged').length")
        rows_drawn = page.eval("document.querySelectorAll('#flagged-table tbody tr').length")
        problems += page.problems
        page.close()
    return {
        "name": name,
        "rows": n,
        "quarantined": result.summary["rows_quarantined"],
        "render_s": render_s,
        "load_s": statistics.median(loads),
        "bytes": os.path.getsize(path),
        "cards": cards,
        "rows_drawn": rows_drawn,
        "problems": problems,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder, Chromium() as browser:
        small = measure(browser, "small", 6_000, 60, folder)
        large = measure(browser, "large", 120_000, 10_500, folder)
    for r in (small, large):
        print(r, flush=True)
        if r["problems"]:
            raise SystemExit(f"the {r['name']} page reported problems: {r['problems']}")
    lines = [
        f"| {r['rows']:,} rows, {r['quarantined']:,} quarantined | {r['bytes'] / 1e6:.2f} MB | {r['render_s']:.2f} | "
        f"{r['load_s']:.2f} | {r['cards']} | {r['rows_drawn']} |"
        for r in (small, large)
    ]
    text = f"""## Review report: a 10,000-flagged-row page against a small one

`python benchmarks/report_bench.py` on {machine()}. Two in-memory scans of Gaussian
vectors (16 dimensions, three classes) with a shifted group planted in class 0; each
page rendered with `result.report_html()` and opened in headless Chromium {LOADS} times
(load: navigation until the page's script has run; median).

| scan | page size | render s | load s | gallery cards | table rows drawn |
| --- | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(lines)}

With {large['quarantined'] / small['quarantined']:.0f}x the quarantined rows, the page is
{large['bytes'] / small['bytes']:.1f}x the size and loads in {large['load_s'] / small['load_s']:.1f}x the
time ({large['load_s']:.2f} s; target: a few seconds): the gallery is capped at 480 cards and
the table draws 100 rows a page; the full list is in quarantine.csv.
"""
    write_section("report", text)
    print(text)


if __name__ == "__main__":
    main()
