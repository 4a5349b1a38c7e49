"""Screenshot of the live map page (docs/map.png) from a running API, e.g. `make demo`'s.

.venv/bin/python bench/map_screenshot.py http://127.0.0.1:8000 docs/map.png
"""

from __future__ import annotations

import sys

import httpx
from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]  # fmt: skip


def main() -> None:
    base, out = sys.argv[1].rstrip("/"), sys.argv[2]
    hot = httpx.get(f"{base}/v1/hotspots", params={"limit": 1}, timeout=5).json()["hotspots"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1050})
        page.goto(base + "/")
        page.wait_for_function("window.pinganMap && window.pinganMap.paintedVersion !== null", timeout=30_000)
        if hot:  # open the hottest grid's panel, as an operator would
            page.locator(f"#hotspots li[data-grid='{hot[0]['grid_id']}']").click()
            page.wait_for_function("Number(document.getElementById('detail').dataset.historyPoints) > 0")
        page.wait_for_timeout(1500)  # the alert feed's first events
        page.screenshot(path=out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
