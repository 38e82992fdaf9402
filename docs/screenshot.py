"""Regenerate docs/report.png: the report of the demo scan, as headless Chromium shows it.

    .venv/bin/python docs/screenshot.py [DEMO_OUT]

DEMO_OUT is the folder ``make demo`` wrote (default: demo-out; the demo is run first
when it holds no report).
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from tests.browser import Chromium  # noqa: E402


def main(argv: list[str]) -> int:
    out = os.path.abspath(argv[0] if argv else "demo-out")
    report = os.path.join(out, "report.html")
    if not os.path.exists(report):
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "poisonscan"), "demo", "--out", out], check=True)
    target = os.path.join(HERE, "report.png")
    with Chromium() as browser:
        page = browser.open("file://" + report, width=1280, height=900)
        if page.eval("document.body.dataset.ready") != "1" or page.problems:
            raise SystemExit(f"the report did not load cleanly: {page.problems}")
        # the headline, the poisoned class's plots and the first rows of the gallery
        page.eval("document.querySelectorAll('#classes details').forEach(d => d.open = false)")
        page.eval("document.querySelector('#classes details').open = true")
        page.screenshot(target, full_page=True, max_height=2000)
        # and the gallery: the flagged digits beside clean ones
        gallery = os.path.join(HERE, "report-gallery.png")
        top = page.eval("document.getElementById('gallery').getBoundingClientRect().top + window.scrollY")
        page.screenshot(gallery, clip=(0, top - 8, 1280, 1100))
    for path in (target, gallery):
        print(f"wrote {path} ({os.path.getsize(path):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
