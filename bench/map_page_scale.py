"""The map page at 50,000 grids in headless Debian chromium: load, a colour update, a pan/zoom redraw.

Results and the machine they were measured on: docs/benchmarks.md ("The map page at 50,000 grids").

The page (web/) is served from a local static server; its API calls are answered by Playwright with a
synthetic lattice of N square grids (shapes once, then the risk snapshot and a delta of changed grids), so
only the page and ECharts are measured, not the API.

    .venv/bin/python bench/map_page_scale.py [N=50000]
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

from playwright.sync_api import Route, sync_playwright

WEB = Path(__file__).resolve().parent.parent / "web"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]  # fmt: skip
LEVELS = ("green", "green", "green", "green", "green", "green", "yellow", "orange", "red")


def lattice(n: int) -> tuple[dict, dict]:
    side = math.ceil(math.sqrt(n))
    step = 0.004
    rng = random.Random(1)
    shapes, grids = [], []
    for i in range(n):
        x, y = 103.5 + (i % side) * step, 30.9 + (i // side) * step
        gid = f"G{i:06d}"
        ring = [[round(x, 6), round(y, 6)], [round(x + step, 6), round(y, 6)], [round(x + step, 6), round(y + step, 6)],
                [round(x, 6), round(y + step, 6)], [round(x, 6), round(y, 6)]]  # fmt: skip
        shapes.append({"grid_id": gid, "name": gid, "community_id": f"C{i // 200}", "subdistrict_id": f"S{i // 5000}",
                       "district_id": "D1", "police_station_id": f"P{i // 2500}", "ring": ring})  # fmt: skip
        level = rng.choice(LEVELS)
        grids.append({"grid_id": gid, "name": gid, "level": level, "score": 0.0, "as_of": None,
                      "dominant_source": None})  # fmt: skip
    counts = {level: sum(1 for g in grids if g["level"] == level) for level in ("green", "yellow", "orange", "red")}
    summary = {"grids": n, "levels": counts, "as_of": None, "fetched_at": "2026-12-01T00:00:00Z",
               "unregistered_grids": 0, "version": 1}  # fmt: skip
    return {"count": n, "grids": shapes}, {"summary": summary, "full": True, "since": None, "grids": grids}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    shapes, risk = lattice(n)
    shapes_body, risk_body = json.dumps(shapes), json.dumps(risk)
    print(f"{n} grids: shapes {len(shapes_body) / 1e6:.1f} MB, full risk {len(risk_body) / 1e6:.1f} MB (uncompressed)")

    def api(route: Route) -> None:
        url = route.request.url
        if "/v1/grids/shapes" in url:
            route.fulfill(status=200, content_type="application/json", body=shapes_body)
        elif "/v1/grids/risk" in url and "since=" not in url:
            route.fulfill(status=200, content_type="application/json", body=risk_body, headers={"ETag": '"1-a"'})
        elif "/v1/grids/risk" in url:
            route.fulfill(status=304, headers={"ETag": '"1-b"'})
        elif "/v1/alerts/stream" in url:
            route.fulfill(status=200, content_type="text/event-stream", body=": keep-alive\n\n")
        else:
            route.fulfill(status=404, content_type="application/problem+json", body='{"detail": "n/a"}')

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.route("**/v1/**", api)
        index = (WEB / "index.html").read_text()
        page.route("http://map.local/", lambda r: r.fulfill(body=index, content_type="text/html"))
        page.route("http://map.local/web/**", lambda r: r.fulfill(
            body=(WEB / r.request.url.split("/web/", 1)[1]).read_bytes()))  # fmt: skip
        started = time.perf_counter()
        page.goto("http://map.local/")
        page.wait_for_function("window.pinganMap && window.pinganMap.paintedVersion === 1", timeout=300_000)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        load = time.perf_counter() - started
        # One poll's repaint with 1% of grids changed: what the page does on each changed snapshot.
        repaint_js = """() => {
          const m = window.pinganMap, s = m.state;
          let i = 0;
          for (const g of s.grids.values()) { if (i++ % 100 === 0) g.level = g.level === 'red' ? 'green' : 'red'; }
          const t = performance.now();
          m.gridMap.setLevels(s.shapes.map(sh => { const g = s.grids.get(sh.grid_id); return g ? g.level : 'green'; }));
          m.gridMap.draw();
          m.gridMap.context.getImageData(0, 0, 1, 1);
          return performance.now() - t;
        }"""
        repaints = [page.evaluate(repaint_js) for _ in range(5)]
        # A typical changed snapshot: a few dozen grids of one neighbourhood change colour.
        local_js = repaint_js.replace("i++ % 100 === 0", "(i++ >= start && i <= start + 40)").replace(
            "() => {", "(start) => {"
        )
        local = [page.evaluate(local_js, 1000 + 3000 * k) for k in range(5)]
        # A sharp redraw of every polygon (after a pan/zoom gesture pauses; getImageData waits for the raster).
        zoom_js = """(factor) => { const g = window.pinganMap.gridMap; const t = performance.now();
          g.view.scale *= factor; g.draw(); g.context.getImageData(0, 0, 1, 1); return performance.now() - t; }"""
        frames = [page.evaluate(zoom_js, 1.1) for _ in range(10)]
        # A frame during the gesture: the last drawing moved as a bitmap.
        move_js = """() => new Promise(done => { const g = window.pinganMap.gridMap; g.view.x += 5;
          const t = performance.now(); g.requestMove();
          requestAnimationFrame(() => requestAnimationFrame(() => { g.context.getImageData(0, 0, 1, 1);
            done(performance.now() - t); })); })"""
        moves = [page.evaluate(move_js) for _ in range(10)]
        heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize / 1e6 : null")
        browser.close()
    print(f"load to first paint: {load:.2f} s")
    print(
        f"repaint (1% changed, all over the map): median {statistics.median(repaints):.0f} ms, "
        f"max {max(repaints):.0f} ms"
    )
    print(f"repaint (40 neighbouring grids changed): median {statistics.median(local):.0f} ms, max {max(local):.0f} ms")
    print(f"sharp redraw (gesture paused): median {statistics.median(frames):.0f} ms, max {max(frames):.0f} ms")
    print(
        f"frame during pan/zoom (two animation frames included): median {statistics.median(moves):.0f} ms, "
        f"max {max(moves):.0f} ms"
    )
    if heap:
        print(f"JS heap: {heap:.0f} MB")


if __name__ == "__main__":
    main()
