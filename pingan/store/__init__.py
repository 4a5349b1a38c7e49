"""ClickHouse storage. One module per table holds all of that table's SQL; handlers call its functions.

Every function takes an :class:`~pingan.store.client.Executor`, so the same SQL runs on the ClickHouse
server (clickhouse-driver) and, in the test suite, on the current engine in-process (chdb).
"""
