"""Bounds of the ingest gateway: body size, content type, and how many requests are in flight.

Nothing here queues. A request over a limit is refused at once (413, 415, 429) so that a burst costs the
gateway at most ``ingest_max_in_flight × ingest_max_body_bytes`` of memory, and a producer learns to slow
down or split its batches instead of waiting in a queue it cannot see.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pingan.api.errors import ApiError

__all__ = [
    "BROKER_RETRY_AFTER_SECONDS",
    "BUSY_RETRY_AFTER_SECONDS",
    "InFlightLimiter",
    "Permit",
    "check_content_headers",
    "read_limited",
]

# Busy clears as soon as one request finishes; a broker outage takes longer, so clients back off more.
BUSY_RETRY_AFTER_SECONDS = 1
BROKER_RETRY_AFTER_SECONDS = 5


def too_large(limit: int, what: str = "the request body") -> ApiError:
    return ApiError(413, "body_too_large", f"{what} is larger than {limit} bytes; send smaller batches")


def check_content_headers(headers: Mapping[str, str], limit: int) -> None:
    """Refuse before reading: a declared length over ``limit`` (413), a compressed or non-JSON body (415)."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise too_large(limit, f"the request body ({int(declared)} bytes)")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        message = f"Content-Encoding {encoding!r} is not supported; send plain JSON"
        raise ApiError(415, "unsupported_media_type", message)
    content_type = headers.get("content-type")
    if content_type is not None:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise ApiError(415, "unsupported_media_type", f"expected application/json, got {media_type!r}")


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes ``limit``.

    Content-Length is checked first but cannot be trusted alone: a chunked body has none, and the server does
    not stop a client that sends more than it declared.
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


class Permit:
    """One in-flight slot. Released when its request ends, or later if records it sent are still buffered."""

    def __init__(self, limiter: InFlightLimiter) -> None:
        self._limiter = limiter
        self._released = False
        self.detached = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter.in_use -= 1

    def release_when_done(self, work: asyncio.Future[Any]) -> None:
        """Keep the slot until ``work`` (a task or future) finishes, though the request answers now.

        A delivery that timed out is still in the producer's buffer; holding its slot until the broker has
        acknowledged or refused it is what keeps that buffer bounded while clients retry.
        """
        self.detached = True
        work.add_done_callback(lambda _: self.release())


class InFlightLimiter:
    """At most ``limit`` permits at a time; when none is free, 429 at once (no waiting room)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the in-flight limit must be at least 1")
        self.limit = limit
        self.in_use = 0  # only touched from the event loop's thread, so no lock

    @contextmanager
    def acquire(self) -> Iterator[Permit]:
        if self.in_use >= self.limit:
            raise ApiError(
                429,
                "too_many_requests",
                f"the gateway is handling {self.limit} requests already; retry shortly",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
            )
        self.in_use += 1
        permit = Permit(self)
        try:
            yield permit
        finally:
            if not permit.detached:
                permit.release()
