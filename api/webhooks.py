"""Webhooks: any registered feed pushes its own raw records, mapped at the edge by the feed's adapter.

``POST /v1/webhooks/{feed}`` takes one raw record (a JSON object in the feed's own shape: for call110 a CAD
incident as the tailer reads it), a JSON array of them, JSON lines, or a batch object whose list is under
``alerts``/``records``/``events``/``items``/``data`` (its other fields are defaults for every record, as
camera platforms send them). Each record goes through the same adapter as the file tailer (the feed's
mapper, its place table and severity rule, :class:`pingan.feeds.FeedRules`, the grid registry), so a
record gets the same answer by webhook as by file. The answer and the delivery are the gateway's: same
keys, per-item results, answered after the broker's acks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pingan.api.errors import ApiError
from pingan.api.ingest_batch import ItemRules, Outcome, Rejected, check_item
from pingan.errors import ConfigError
from pingan.feeds import FeedSpec
from pingan.grids import GridRegistry
from pingan.producers.adapters import adapter_for
from pingan.producers.adapters.base import FeedAdapter
from pingan.settings import Settings

__all__ = ["Webhooks", "webhook_outcomes"]


@dataclass(frozen=True)
class Webhooks:
    """Each feed's adapter for its webhook, built once at start-up. A feed whose mapper cannot be loaded
    has no webhook (404 saying why) instead of stopping the API."""

    adapters: Mapping[str, FeedAdapter]
    unusable: Mapping[str, str]  # feed -> why it has no webhook

    @classmethod
    def for_feeds(cls, settings: Settings, feeds: Mapping[str, FeedSpec], registry: GridRegistry) -> Webhooks:
        adapters, unusable = {}, {}
        for name, spec in feeds.items():
            try:
                adapters[name] = adapter_for(settings, spec, registry, source="webhook")
            except ConfigError as exc:
                unusable[name] = str(exc)
        return cls(adapters, unusable)

    def adapter(self, feed: str) -> FeedAdapter:
        """The feed's adapter, or ApiError 404."""
        found = self.adapters.get(feed)
        if found is not None:
            return found
        if feed in self.unusable:
            raise ApiError(404, "no_webhook", f"feed {feed!r} has no webhook: {self.unusable[feed]}", "feed")
        known = ", ".join(sorted(self.adapters))
        raise ApiError(404, "unknown_source", f"no feed {feed!r}; feeds with a webhook: {known}", "feed")


def webhook_outcomes(
    adapter: FeedAdapter, body: bytes, *, rules: ItemRules, origin: str, now: datetime, max_batch: int
) -> list[Outcome]:
    """Every record of a webhook body as the gateway's per-item outcome, in order. Pure.

    A record the adapter refuses is rejected with its dead letter (origin ``<origin>#<index>``); a mapped
    one is checked as a gateway item, which gives the key of its grid (the adapter already applied the same
    rules, so it is accepted). Raises ApiError 413 for more records than ``max_batch``.
    """
    mapped = adapter.map_document(body, origin, now=now)
    if len(mapped) > max_batch:
        raise ApiError(413, "too_many_events", f"the body has {len(mapped)} records; the limit is {max_batch}")
    outcomes: list[Outcome] = []
    for index, item in enumerate(mapped):
        if item.envelope is not None:
            outcomes.append(check_item(index, item.envelope, source=adapter.spec.name, now=now, rules=rules))
            continue
        assert item.letter is not None
        outcomes.append(Rejected(index, None, item.letter.error, item.letter.raw, item.letter))
    return outcomes
