"""Vendor webhooks: feeds that push their own document shape, mapped at the edge by the feed's adapter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pingan.feeds import FeedSpec
from pingan.grids import GridRegistry
from pingan.settings import Settings
from producers.adapters import adapter_for, publisher_for
from producers.adapters.base import FeedAdapter
from producers.adapters.delivery import FeedPublisher


@dataclass
class Webhook:
    """One feed's adapter and publisher. The publisher connects on first use, so the API starts even while
    the broker is down; the webhook then answers 503 and the vendor retries."""

    adapter: FeedAdapter
    publisher: FeedPublisher
    _started: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def for_feed(cls, settings: Settings, spec: FeedSpec, registry: GridRegistry) -> Webhook:
        return cls(adapter_for(settings, spec), publisher_for(settings, spec, registry))

    async def started_publisher(self) -> FeedPublisher:
        async with self._lock:
            if not self._started:
                await self.publisher.start()
                self._started = True
        return self.publisher

    async def close(self) -> None:
        if self._started:
            await self.publisher.stop()
