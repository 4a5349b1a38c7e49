"""Writing evaluation results into docs/: marked sections of a Markdown file, and the log of runs."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pingan.settings import REPO_ROOT

# One JSON object a line, one line per evaluation run written with --write (or --record): config version,
# data, numbers, commit. Compare runs over time with e.g. `jq -c '[.run_at, .config_version, ...]'`.
RUNS = REPO_ROOT / "docs" / "evaluation-runs.jsonl"


def replace_section(path: Path, name: str, text: str) -> None:
    """Replace what lies between ``<!-- NAME -->`` and ``<!-- end NAME -->`` (appended when missing)."""
    document = path.read_text(encoding="utf-8")
    begin, end = f"<!-- {name} -->", f"<!-- end {name} -->"
    if begin in document and end in document:
        head, rest = document.split(begin, 1)
        tail = rest.split(end, 1)[1]
        document = f"{head}{begin}\n\n{text}\n\n{end}{tail}"
    else:
        document = f"{document.rstrip()}\n\n{begin}\n\n{text}\n\n{end}\n"
    path.write_text(document, encoding="utf-8")


def record_run(record: dict[str, Any], runs: Path = RUNS) -> None:
    """Append one run, with when it ran and at which commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=REPO_ROOT, check=False).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    line = {"run_at": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit, **record}
    with runs.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")
