"""AppendOnlyRows (api/incidents.py): the fold's inputs in memory, read incrementally, never drifting."""

from __future__ import annotations

from pingan.api.incidents import AppendOnlyRows


class Table:
    """An append-only table of positions, counting the rows each read returns."""

    def __init__(self, rows: list[int]) -> None:
        self.rows = list(rows)
        self.returned = 0

    def count_before(self, position: int) -> int:
        return sum(1 for row in self.rows if row < position)

    def read_from(self, position: int) -> list[int]:
        found = [row for row in self.rows if row >= position]
        self.returned += len(found)
        return found


def _cache(table: Table, clock: list[float]) -> AppendOnlyRows[int]:
    return AppendOnlyRows(table.count_before, table.read_from, lambda row: row, overlap=10,
                          full_read_seconds=60, monotonic=lambda: clock[0])  # fmt: skip


def test_reads_only_the_recent_rows_and_sees_new_ones() -> None:
    table, clock = Table(list(range(0, 1000, 5))), [0.0]
    cache = _cache(table, clock)
    assert sorted(cache.rows()) == table.rows
    table.returned = 0
    table.rows.append(1001)
    assert sorted(cache.rows()) == sorted(table.rows)
    assert table.returned == 4  # 990, 995 (overlap), 1001: not the whole table


def test_a_row_older_than_the_overlap_or_a_merge_forces_a_full_read() -> None:
    table, clock = Table([0, 100, 200]), [0.0]
    cache = _cache(table, clock)
    cache.rows()
    table.rows.append(50)  # arrived late, far behind the newest row
    assert sorted(cache.rows()) == [0, 50, 100, 200]
    table.rows.remove(100)  # a merge folded a copy
    assert sorted(cache.rows()) == [0, 50, 200]


def test_everything_is_read_again_after_a_while() -> None:
    table, clock = Table([0, 100]), [0.0]
    cache = _cache(table, clock)
    cache.rows()
    table.rows[0] = 1  # a change no count notices
    assert sorted(cache.rows()) == [0, 100]
    clock[0] = 61.0
    assert sorted(cache.rows()) == [1, 100]


def test_the_same_rows_come_back_as_the_same_list() -> None:
    """Callers reuse what they computed from the rows while the list is the same object."""
    table, clock = Table([0, 100]), [0.0]
    cache = _cache(table, clock)
    first = cache.rows()
    assert cache.rows() is first
    table.rows.append(105)
    assert cache.rows() is not first
