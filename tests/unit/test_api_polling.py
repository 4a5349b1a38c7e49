"""Cheap polling, pure parts: ETags and If-None-Match, Accept-Encoding, and the versioned snapshot store."""

from __future__ import annotations

import gzip
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from pingan.api.conditional import Rendered, accepts_gzip, entity_tag, gzipped_tag, not_modified
from pingan.api.snapshot import SnapshotStore
from pingan.api.views import RiskSnapshot
from pingan.errors import StorageError

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_entity_tags_name_version_and_variant_and_if_none_match_compares_weakly() -> None:
    tag = entity_tag(7, ("json", None))
    assert tag.startswith('"7-') and tag.endswith('"')
    assert entity_tag(7, ("json", None)) == tag
    assert entity_tag(8, ("json", None)) != tag
    assert entity_tag(7, ("geojson", None)) != tag
    assert gzipped_tag(tag) == tag[:-1] + '+gzip"'
    assert not_modified(tag, tag)
    assert not_modified(gzipped_tag(tag), tag)  # the gzip representation names the same snapshot
    assert not_modified(f'"other", W/{tag}', tag)
    assert not_modified("*", tag)
    assert not not_modified(None, tag)
    assert not not_modified(entity_tag(6, ("json", None)), tag)


def test_accepts_gzip() -> None:
    assert accepts_gzip("gzip, deflate, br")
    assert accepts_gzip("br;q=1.0, gzip;q=0.5")
    assert accepts_gzip("*")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("br")
    assert not accepts_gzip(None)


def test_rendered_gzip_round_trips_and_is_deterministic() -> None:
    body = Rendered(b'{"grids": []}' * 100, '"1-x"')
    assert gzip.decompress(body.gzip()) == body.identity
    assert body.gzip() == body.gzip()  # mtime 0: the same bytes for the same snapshot


def _grid(grid_id: str, level: str, gi_z: float = 0.0) -> dict:
    return {"grid_id": grid_id, "level": level, "score": 0.0, "own_level": level, "own_score": 0.0, "as_of": None,
            "dominant_source": None, "window_events": 0, "config_version": None,
            "spatial": {"gi_z": gi_z, "lift": 0.0}}  # fmt: skip


def _snapshot(version: int, levels: dict[str, str], gi_z: float = 0.0) -> RiskSnapshot:
    grids = tuple(_grid(g, level, gi_z) for g, level in levels.items())
    return RiskSnapshot(NOW, grids, {g["grid_id"]: g for g in grids}, 0, version)


class FakeTable:
    """What the store sees of risk_latest: a change marker and the rows behind it."""

    def __init__(self) -> None:
        self.marker = 0
        self.levels = {"G1": "green", "G2": "green", "G3": "green"}
        self.gi_z = 0.0
        self.loads = 0

    def load(self, version: int) -> RiskSnapshot:
        self.loads += 1
        return _snapshot(version, dict(self.levels), self.gi_z)


def test_store_reads_only_on_change_keeps_the_version_for_equal_grids_and_lists_changes() -> None:
    table = FakeTable()
    wall = iter(range(1000, 2000, 10))
    store = SnapshotStore(table.load, lambda: table.marker, wall_ms=lambda: next(wall))
    first = store.refresh()
    assert (first.version, table.loads) == (1000, 1)
    assert store.refresh() is first and table.loads == 1  # marker unchanged: no read

    table.marker = 1  # e.g. a merge: the table changed, no grid did
    same = store.refresh()
    assert (same.version, table.loads) == (1000, 2)
    assert same.snapshot is first.snapshot

    table.marker, table.levels["G2"] = 2, "red"
    second = store.refresh()
    assert second.version == 1020  # 1010 was drawn for the read that changed nothing, and not kept
    assert store.changed_since(1000, second) == [_grid("G2", "red")]
    assert store.changed_since(1020, second) == []
    assert store.changed_since(1010, second) is None  # unknown version: the client gets everything

    table.marker, table.levels["G3"] = 3, "orange"
    third = store.refresh()
    assert [g["grid_id"] for g in store.changed_since(1000, third)] == ["G2", "G3"]
    assert [g["grid_id"] for g in store.changed_since(1020, third)] == ["G3"]

    # The district's spatial statistics moved (a new body, a new version) but no grid's risk did.
    table.marker, table.gi_z = 4, 0.5
    fourth = store.refresh()
    assert fourth.version > third.version
    assert store.changed_since(third.version, fourth) == []


def test_store_versions_increase_even_when_the_clock_does_not() -> None:
    table = FakeTable()
    store = SnapshotStore(table.load, lambda: table.marker, wall_ms=lambda: 5000)
    assert store.refresh().version == 5000
    table.marker, table.levels["G1"] = 1, "yellow"
    assert store.refresh().version == 5001


def test_store_forgets_old_versions_beyond_its_history() -> None:
    table = FakeTable()
    wall = iter(range(1, 100))
    store = SnapshotStore(table.load, lambda: table.marker, history=2, wall_ms=lambda: next(wall))
    versions = []
    for level in ("yellow", "orange", "red"):
        table.marker, table.levels["G1"] = table.marker + 1, level
        versions.append(store.refresh().version)
    current = store.current
    assert current is not None
    assert store.changed_since(versions[0], current) is None
    assert store.changed_since(versions[1], current) == [_grid("G1", "red")]


def test_requests_are_served_from_memory_while_the_background_refreshes() -> None:
    table = FakeTable()
    now = [0.0]
    store = SnapshotStore(table.load, lambda: table.marker, timer=lambda: now[0])
    assert store.age_seconds() is None
    store.for_request(refreshed_in_background=True)  # nothing in memory yet: the first request reads
    table.marker, table.levels["G1"] = 1, "red"
    now[0] = 3600.0
    served = store.for_request(refreshed_in_background=True)
    assert served.snapshot.grids[0]["level"] == "green" and table.loads == 1  # memory, however old
    assert store.age_seconds() == 3600.0
    assert store.for_request(refreshed_in_background=False).snapshot.grids[0]["level"] == "red"  # no refresher
    assert store.age_seconds() == 0.0


def test_concurrent_requests_share_one_read_and_a_failed_read_keeps_nothing() -> None:
    table = FakeTable()
    gate = threading.Event()

    def slow_load(version: int) -> RiskSnapshot:
        gate.wait(5)
        return table.load(version)

    store = SnapshotStore(slow_load, lambda: table.marker)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(store.for_request, refreshed_in_background=False) for _ in range(8)]
        time.sleep(0.05)
        gate.set()
        versions = {f.result().version for f in futures}
    assert (len(versions), table.loads) == (1, 1)  # eight callers: one read, the others saw it unchanged

    def down() -> int:
        raise StorageError("connection refused")

    failing = SnapshotStore(table.load, down)
    with pytest.raises(StorageError):
        failing.for_request(refreshed_in_background=True)
    assert failing.current is None and failing.age_seconds() is None
