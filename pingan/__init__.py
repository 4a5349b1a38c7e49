"""Pingan core: settings, errors, clock, grid registry, ClickHouse store, local services and the CLI."""

__version__ = "0.1.0"
