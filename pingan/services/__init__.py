"""Local services: the Kafka-protocol broker (Tansu) and ClickHouse, started, probed and stopped."""

from pingan.services.supervision import *  # noqa: F403
