"""Install a feed plugin the way pip would, minus pip: a ``*.dist-info`` directory on a path entry.

``importlib.metadata`` finds distributions by scanning ``sys.path`` for ``*.dist-info`` directories, so a
directory holding one (on ``sys.path`` for this process, on ``PYTHONPATH`` for a child) is an installed
distribution with its entry points, and takes a fraction of the time of building and installing a wheel.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pingan.feeds import ENTRY_POINT_GROUP


def write_dist_info(
    site: Path, entry_points: Mapping[str, str], *, name: str = "pingan-feed-test", version: str = "0.1.0"
) -> Path:
    """A distribution ``name`` declaring ``entry_points`` (feed name -> "module:attr") in pingan's group."""
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{feed} = {target}" for feed, target in entry_points.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return dist_info
