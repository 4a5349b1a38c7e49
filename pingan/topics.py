"""Create the project's Kafka topics, idempotently, before anything produces or consumes.

Every topic gets ``settings.topic_partitions`` partitions. That number is part of the data model: a grid's
events must land on the partition that ``partition_for_key(grid_id)`` names, and the worker checks it, so
an existing topic with a different partition count is a configuration error, not something to paper over.

The risk topic carries the latest risk of each grid keyed by grid id, so it asks for log compaction. On the
local Tansu broker (memory storage) ``cleanup.policy=compact`` is accepted and reported back by
DescribeConfigs but not enforced (its storage engine has no cleaner yet), which is harmless at demo sizes; a
broker that refuses the setting gets the topic without it and a warning in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from pingan.errors import ConfigError, ServiceError
from pingan.settings import Settings

__all__ = ["COMPACTED", "ensure_topics", "recreate_changelog", "topic_names"]

log = logging.getLogger(__name__)

COMPACTED: Mapping[str, str] = {"cleanup.policy": "compact"}

# Kafka protocol error codes we handle by name (org.apache.kafka.common.protocol.Errors).
_TOPIC_ALREADY_EXISTS = 36
_CONFIG_REFUSED = frozenset({40, 42, 44})  # INVALID_CONFIG, INVALID_REQUEST, POLICY_VIOLATION


def topic_names(settings: Settings) -> tuple[str, ...]:
    """The topics: events, dead letters, late events, risk, alerts, alert actions."""
    return (
        settings.topic_events,
        settings.topic_dead_letters,
        settings.topic_late,
        settings.topic_risk,
        settings.topic_alerts,
        settings.topic_alert_actions,
    )


def _errors(response: object) -> dict[str, tuple[int, str | None]]:
    # CreateTopicsResponse v0 has (topic, error_code); v1+ adds error_message.
    found: dict[str, tuple[int, str | None]] = {}
    for entry in getattr(response, "topic_errors", []):
        topic, code, *rest = entry
        found[topic] = (code, rest[0] if rest else None)
    return found


async def _create(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> dict[str, tuple[int, str | None]]:
    return _errors(await admin.create_topics(topics))


async def ensure_topics(settings: Settings) -> None:
    """Create the events, dead-letter, late, risk, alerts and alert-actions topics unless they exist; check
    partition counts."""
    partitions, replication = settings.topic_partitions, settings.topic_replication
    events, dead_letters, late, risk, alerts, actions = topic_names(settings)
    wanted = [NewTopic(name, partitions, replication) for name in (events, dead_letters, late, alerts, actions)]
    wanted.append(NewTopic(risk, partitions, replication, topic_configs=dict(COMPACTED)))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="pingan-topics")
    try:
        await admin.start()
        results = await _create(admin, wanted)
        code, message = results.get(risk, (0, None))
        if code in _CONFIG_REFUSED:
            log.warning(
                "broker refused %s for %s (error %d: %s); creating it without log compaction",
                dict(COMPACTED), risk, code, message,
            )  # fmt: skip
            results.update(await _create(admin, [NewTopic(risk, partitions, replication)]))
        failures = {
            topic: f"error {code}: {message or 'no message'}"
            for topic, (code, message) in results.items()
            if code not in (0, _TOPIC_ALREADY_EXISTS)
        }
        if failures:
            raise ServiceError(f"could not create topics on {settings.kafka_bootstrap}: {failures}")
        existing = [topic for topic, (code, _) in results.items() if code == _TOPIC_ALREADY_EXISTS]
        if existing:
            await _check_partitions(admin, existing, partitions)
        created = sorted(topic for topic, (code, _) in results.items() if code == 0)
        if created:
            log.info("created topics %s (%d partitions, replication %d)", ", ".join(created), partitions, replication)
    except KafkaError as exc:
        raise ServiceError(f"cannot manage topics on Kafka at {settings.kafka_bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()


async def _check_partitions(admin: AIOKafkaAdminClient, topics: list[str], partitions: int) -> None:
    for description in await admin.describe_topics(topics):
        found = len(description.get("partitions", []))
        if found != partitions:
            raise ConfigError(
                f"topic {description.get('topic')} has {found} partitions but topic_partitions is {partitions}: "
                "keys would route to the wrong partition; use a new topic_prefix or recreate the topic"
            )


async def recreate_changelog(settings: Settings, name: str) -> None:
    """Create a worker's window-state changelog ``name`` (compacted, ``topic_partitions``) again after the broker
    lost its logs; on the local broker, empty.

    The worker calls this rather than Faust's declare, which skips the creation while its client's metadata still
    lists the topic (it does for a while after the broker came back empty).

    On the local broker the changelog is deleted and created again, so that it holds none of what was written to
    it since the restart. Tansu takes records for a topic it does not have (a producer whose metadata still lists
    the topic sends them: a checkpoint under way when the broker restarted), and creating the topic (by a
    CreateTopics request, or by a client's metadata request, which Tansu answers by creating the topics it names)
    restarts its offsets at 0 without removing them: the next writes fail with UNKNOWN_SERVER_ERROR
    ("ObjectStore(AlreadyExists)" in the broker's log) until the offsets pass them, and readers then see them
    among the new records and miss new records written over their offsets. Deleting the topic removes every
    record Tansu kept under its name; a changelog of a lost log holds nothing worth keeping (each worker writes its
    whole state to it after finding the loss).
    """
    partitions, replication = settings.topic_partitions, settings.topic_replication
    wanted = [NewTopic(name, partitions, replication, topic_configs=dict(COMPACTED))]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="pingan-topics")
    try:
        await admin.start()
        # Tansu deletes only a topic it knows: records taken for an unknown one stay until it exists.
        steps = ("create", "delete", "create") if settings.kafka_is_managed else ("create",)
        for step in steps:
            if step == "delete":
                await admin.delete_topics([name])
                continue
            code, message = (await _create(admin, wanted)).get(name, (0, None))
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise ServiceError(f"could not create topic {name} on {settings.kafka_bootstrap}: error {code}: "
                                   f"{message or 'no message'}")  # fmt: skip
        await _check_partitions(admin, [name], partitions)
        log.info("created topic %s again (%d partitions, replication %d%s)", name, partitions, replication,
                 ", emptied" if settings.kafka_is_managed else "")  # fmt: skip
    except KafkaError as exc:
        raise ServiceError(f"cannot manage topics on Kafka at {settings.kafka_bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
