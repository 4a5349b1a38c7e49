"""One exception tree for the whole project.

PinganError
├── ConfigError            settings or config files are wrong; fix and restart
├── InvalidEvent           one input record is unusable; carries kind, field and reason; dead-lettered
├── InvalidCursor          a feed position (the alerts' ``after``) this API never returned; a 422 to the caller
├── ServiceError           a local service (broker, ClickHouse) could not be started, stopped or reached
└── StorageError           ClickHouse rejected or could not take a request
    ├── StorageUnavailable can succeed later (connection refused or lost, timeout, overload): retried
    └── StorageRejected    never will as it is (a value ClickHouse cannot store): the rows are isolated
"""

from __future__ import annotations


class PinganError(Exception):
    """Base class of every error Pingan raises on purpose."""


class ConfigError(PinganError):
    """A setting or a configuration file is missing or inconsistent."""


class InvalidEvent(PinganError):
    """An input record cannot become an event.

    ``kind`` is a stable machine-readable category (``bad_json``, ``missing_field``, ``out_of_range``,
    ``unknown_source``, ``oversize``, ``future_timestamp``, ``invalid_field``, ``no_grid``...), ``field`` the
    dotted path of the offending field when there is one, ``reason`` a sentence for a person.
    """

    def __init__(self, kind: str, reason: str, field: str | None = None) -> None:
        self.kind = kind
        self.reason = reason
        self.field = field
        where = f" at {field}" if field else ""
        super().__init__(f"{kind}{where}: {reason}")


class InvalidCursor(PinganError):
    """A cursor that no page of the alert feed returned: the caller's request is wrong, nothing is dead-lettered."""

    def __init__(self, reason: str, field: str) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}")


class ServiceError(PinganError):
    """A local service could not be started, stopped or reached."""


class StorageError(PinganError):
    """ClickHouse could not take or answer a request."""


class StorageUnavailable(StorageError):
    """ClickHouse could not take the request now; the same request can succeed later, so it is retried."""


class StorageRejected(StorageError):
    """ClickHouse (or the driver, encoding it) refused the request's data; retrying it as it is cannot succeed."""
