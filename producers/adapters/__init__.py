"""Adapters for the real feeds: pure mapping functions (raw record -> envelope dict) and their I/O shells.

=============== ===================================== ==============================================
module           mapping function                      shell
=============== ===================================== ==============================================
call110          :func:`call110.map_incident`          :class:`tailer.FileTailer` (JSON lines, CSV)
camera           :func:`camera.map_alert`              :func:`camera.handle_webhook` (alert batches)
checkpoint       :func:`checkpoint.map_pass`           tailer or a pushed document
app_report       :func:`app_report.map_report`         tailer or a pushed document
=============== ===================================== ==============================================

``base`` holds what they share (:class:`base.FeedAdapter` makes a mapping function total: every record
becomes an envelope or a per-record error), ``delivery`` the producer with retries and dead letters.
A feed's mapping function is named by its :class:`pingan.feeds.FeedSpec`; :func:`adapter_for` and
:func:`publisher_for` build the two halves for any registered feed, plugins included.
"""

from __future__ import annotations

from datetime import timedelta

from pingan.feeds import FeedSpec
from pingan.grids import GridRegistry
from pingan.producers.adapters.base import FeedAdapter, MapContext, Mapped, RecordError
from pingan.producers.adapters.delivery import DeliveryReport, FeedPublisher, RetryPolicy
from pingan.settings import Settings

__all__ = [
    "DeliveryReport",
    "FeedAdapter",
    "FeedPublisher",
    "MapContext",
    "Mapped",
    "RecordError",
    "RetryPolicy",
    "adapter_for",
    "publisher_for",
]


def adapter_for(
    settings: Settings, spec: FeedSpec, registry: GridRegistry | None = None, *, source: str = "tailer"
) -> FeedAdapter:
    """The feed's mapping function with the deployment's pseudonym key and the worker's own limits; with a
    grid registry it also refuses what the worker would (unknown grid, outside every grid). ``source`` is the
    way in its dead letters name."""
    return FeedAdapter.for_feed(
        spec,
        settings.pseudonym_key.get_secret_value().encode(),
        max_event_bytes=settings.max_event_bytes,
        max_future=timedelta(seconds=settings.max_future_seconds),
        grids=registry,
        source=source,
    )


def publisher_for(
    settings: Settings, spec: FeedSpec, registry: GridRegistry | None = None, *, retry: RetryPolicy | None = None
) -> FeedPublisher:
    """A publisher to the feed's topic; with a grid registry, location-only events are keyed by their grid."""
    return FeedPublisher(
        settings,
        registry,
        topic=spec.topic_name(settings),
        retry=retry or RetryPolicy(),
        client_id=f"pingan-{spec.name}",
    )
