"""SQL about the server itself rather than a table."""

from __future__ import annotations

from pingan.store.client import Executor


def version(executor: Executor) -> str:
    """The server's version; also the cheapest round trip that proves it answers queries."""
    return str(executor.query("SELECT version()")[0][0])
