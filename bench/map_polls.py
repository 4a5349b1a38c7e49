"""Map polls with wrk on loopback: full 200 (identity, gzip), 304 and `since`, p50/p99 and bytes per poll.

Against a running API (e.g. `make demo`, whose map changes every few seconds), with `make bench-tools`:

    .venv/bin/python bench/map_polls.py http://127.0.0.1:8000 [seconds=10] [connections=8]

Prints a markdown table for docs/benchmarks.md. The 304 run sends the ETag current when it starts; when the
demo's snapshot changes during the run, later requests get a 200 (counted in the table).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx

# Counts response statuses (wrk's own summary lumps 2xx and 3xx together).
_STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; not_modified = 0; other = 0 end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 304 then not_modified = not_modified + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, b, c = 0, 0, 0
  for _, t in ipairs(threads) do a = a + t:get("ok"); b = b + t:get("not_modified"); c = c + t:get("other") end
  io.write(string.format("status 200 %d\\nstatus 304 %d\\nstatus 0 %d\\n", a, b, c))
end
"""
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def wrk(url: str, headers: dict[str, str], seconds: int, connections: int, script: str) -> dict[str, object]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    done = subprocess.run([*args, url], capture_output=True, text=True, check=True)
    out = done.stdout
    if "50%" not in out:
        raise RuntimeError(f"wrk gave no latency distribution:\n{out}\n{done.stderr}")
    statuses = {int(s): int(n) for s, n in re.findall(r"status (\d+) (\d+)", out)}
    return {
        "p50": _ms(re.search(r"50%\s+(\S+)", out).group(1)),
        "p99": _ms(re.search(r"99%\s+(\S+)", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "statuses": statuses,
    }


def main() -> None:
    base = sys.argv[1].rstrip("/")
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    script = "/tmp/pingan-map-polls.lua"
    with open(script, "w") as f:
        f.write(_STATUS_LUA)
    url = f"{base}/v1/grids/risk"
    first = httpx.get(url, headers={"Accept-Encoding": "gzip"}, timeout=10)
    tag, version = first.headers["etag"], first.json()["summary"]["version"]
    since = f"{url}?since={version}"
    since_tag = httpx.get(since, headers={"Accept-Encoding": "gzip"}, timeout=10).headers["etag"]
    cases = [
        ("200 full, identity", url, {"Accept-Encoding": "identity"}),
        ("200 full, gzip", url, {"Accept-Encoding": "gzip"}),
        ("304 (If-None-Match: current ETag)", url, {"Accept-Encoding": "gzip", "If-None-Match": tag}),
        ("since=<current version>, gzip", since, {"Accept-Encoding": "gzip", "If-None-Match": since_tag}),
    ]
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| poll | p50 ms | p99 ms | requests/s | body bytes per poll (sample) | statuses |")
    print("|---|---|---|---|---|---|")
    for label, target, headers in cases:
        sample = httpx.get(target, headers=headers, timeout=10)
        body = sample.num_bytes_downloaded  # on the wire: compressed when gzip, 0 for a 304
        result = wrk(target, headers, seconds, connections, script)
        statuses = ", ".join(f"{s or 'other'}: {n}" for s, n in sorted(result["statuses"].items()) if n)
        print(f"| {label} | {result['p50']:.1f} | {result['p99']:.1f} | {result['rps']:.0f} | {body:,} | {statuses} |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
