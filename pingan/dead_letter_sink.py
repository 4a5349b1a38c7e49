"""The dead-letter sink: the one writer of the ``dead_letters`` table, fed by the dead-letter topic.

Every way in (worker, gateway, webhooks, tailer) puts its dead letters on the dead-letter topic
(:func:`pingan.dead_letter.to_message`); the sink reads them back (:func:`pingan.dead_letter.from_message`)
and inserts each one whose origin has no row yet, then commits its offsets. A crash between the insert and
the commit re-reads the batch, whose rows are then found and skipped: each dead letter is stored once, and
a row marked by ``pingan dead-letters replay`` keeps its mark.

Run it as ``pingan dead-letters sink`` next to the worker, or start :meth:`DeadLetterSink.run` as a task of
another process (it needs only the settings). ClickHouse being down is retried with backoff, responsive to
:meth:`DeadLetterSink.stop`; nothing is committed until the rows are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from pingan.dead_letter import DeadLetter, from_message
from pingan.errors import ServiceError, StorageError
from pingan.settings import Settings
from pingan.store import dead_letters
from pingan.store.client import Executor, connect
from pingan.store.migrate import prepare_database

__all__ = ["GROUP_ID", "DeadLetterSink", "letters_from", "new_rows"]

log = logging.getLogger(__name__)

GROUP_ID: Final = "pingan-dead-letter-sink"
MAX_RECORDS: Final = 500
POLL_MS: Final = 500
RETRY_INITIAL_SECONDS: Final = 0.5
RETRY_MAX_SECONDS: Final = 10.0


def letters_from(records: Iterable[Any]) -> list[DeadLetter]:
    """Dead letters of consumed dead-letter topic records (aiokafka ConsumerRecords). Pure."""
    return [
        from_message(
            record.value,
            record.headers or (),
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
        )
        for record in records
    ]


def new_rows(
    letters: Sequence[DeadLetter], existing: set[tuple[str, int, int]], *, ingested_at: datetime
) -> list[tuple[Any, ...]]:
    """Rows for the letters whose origin is not stored yet, each origin once (the first wins). Pure."""
    seen = set(existing)
    rows = []
    for letter in letters:
        key = (letter.topic, letter.partition, letter.offset)
        if key in seen:
            continue
        seen.add(key)
        rows.append(dead_letters.row(letter, ingested_at=ingested_at))
    return rows


class DeadLetterSink:
    """``await DeadLetterSink(settings).run()`` until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        executor_factory: Callable[[Settings], Executor] = connect,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self._executor_factory = executor_factory
        self._executor: Executor | None = None
        self._clock = clock
        self._stop = asyncio.Event()
        self.stored = 0  # rows inserted
        self.skipped = 0  # letters whose origin already had a row

    def stop(self) -> None:
        self._stop.set()

    def _store(self, letters: Sequence[DeadLetter]) -> int:
        if self._executor is None:
            self._executor = self._executor_factory(self.settings)
        existing = dead_letters.existing_origins(self._executor, letters)
        rows = new_rows(letters, existing, ingested_at=self._clock())
        if rows:
            dead_letters.insert(self._executor, rows)
        return len(rows)

    async def _store_with_retry(self, letters: Sequence[DeadLetter]) -> bool:
        """True once stored; False when stopped first (then nothing is committed and the batch is re-read)."""
        delay = RETRY_INITIAL_SECONDS
        while not self._stop.is_set():
            try:
                stored = await asyncio.to_thread(self._store, letters)
            except StorageError as exc:
                log.warning("dead letters not stored, retrying in %.1fs: %s", delay, exc)
                self._close_executor()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            self.stored += stored
            self.skipped += len(letters) - stored
            return True
        return False

    def _close_executor(self) -> None:
        executor, self._executor = self._executor, None
        close = getattr(executor, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):  # closing a broken connection must not hide the real error
                close()

    async def run(self) -> None:
        """Migrate, then consume and store until :meth:`stop`. Raises ServiceError if the broker is unreachable."""
        await asyncio.to_thread(prepare_database, self.settings)
        consumer = AIOKafkaConsumer(
            self.settings.topic_dead_letters,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.topic_prefix}{GROUP_ID}",
            client_id=GROUP_ID,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise ServiceError(f"the dead-letter sink cannot reach the broker: {exc!r}") from exc
        log.info(
            "dead-letter sink: %s -> ClickHouse %s", self.settings.topic_dead_letters, self.settings.clickhouse_database
        )
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
                records = [record for partition in batches.values() for record in partition]
                if not records:
                    continue
                if not await self._store_with_retry(letters_from(records)):
                    break
                await consumer.commit()
                log.info("dead-letter sink: %d stored, %d already there", self.stored, self.skipped)
        finally:
            await consumer.stop()
            self._close_executor()
