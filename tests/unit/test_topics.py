"""ensure_topics' decisions, against a stand-in admin client (the real broker is in tests/integration)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pytest
from aiokafka.admin import NewTopic

import pingan.topics as topics
from pingan.errors import ConfigError, ServiceError
from tests.support.defaults import default_settings

SETTINGS = default_settings(topic_prefix="unit.", topic_partitions=6, topic_replication=3)


class FakeResponse:
    def __init__(self, errors: list[tuple[str, int, str | None]]) -> None:
        self.topic_errors = errors


class FakeAdmin:
    """Answers create_topics from a script: {topic: error code}, one dict per call."""

    script: ClassVar[list[dict[str, int]]] = []
    partitions: ClassVar[dict[str, int]] = {}
    calls: ClassVar[list[list[NewTopic]]] = []
    deleted: ClassVar[list[list[str]]] = []
    closed: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        FakeAdmin.closed = False

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        FakeAdmin.closed = True

    async def create_topics(self, new_topics: list[NewTopic]) -> FakeResponse:
        FakeAdmin.calls.append(new_topics)
        answers = FakeAdmin.script.pop(0)
        return FakeResponse([(t.name, answers.get(t.name, 0), None) for t in new_topics])

    async def delete_topics(self, names: list[str]) -> None:
        FakeAdmin.deleted.append(names)

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"topic": n, "partitions": [{}] * FakeAdmin.partitions.get(n, 6)} for n in names]


@pytest.fixture(autouse=True)
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeAdmin.script, FakeAdmin.partitions, FakeAdmin.calls, FakeAdmin.deleted = [], {}, [], []
    monkeypatch.setattr(topics, "AIOKafkaAdminClient", FakeAdmin)


async def test_creates_the_topics_with_partitions_replication_and_a_compacted_risk_topic() -> None:
    FakeAdmin.script = [{}]
    await topics.ensure_topics(SETTINGS)
    [created] = FakeAdmin.calls
    assert [t.name for t in created] == [
        "unit.events", "unit.dead-letters", "unit.events-late", "unit.alerts", "unit.alert-actions", "unit.risk",
    ]  # fmt: skip
    assert {(t.num_partitions, t.replication_factor) for t in created} == {(6, 3)}
    assert [t.topic_configs for t in created] == [{}, {}, {}, {}, {}, {"cleanup.policy": "compact"}]
    assert FakeAdmin.closed


async def test_existing_topics_are_fine_when_their_partitions_match() -> None:
    FakeAdmin.script = [dict.fromkeys(topics.topic_names(SETTINGS), 36)]
    await topics.ensure_topics(SETTINGS)
    assert FakeAdmin.closed


async def test_existing_topic_with_other_partitions_is_a_config_error() -> None:
    FakeAdmin.script = [{"unit.events": 36}]
    FakeAdmin.partitions = {"unit.events": 4}
    with pytest.raises(ConfigError, match=r"unit\.events has 4 partitions"):
        await topics.ensure_topics(SETTINGS)
    assert FakeAdmin.closed


async def test_a_refused_compaction_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    FakeAdmin.script = [{"unit.risk": 40}, {}]
    with caplog.at_level(logging.WARNING, logger="pingan.topics"):
        await topics.ensure_topics(SETTINGS)
    assert [t.name for t in FakeAdmin.calls[1]] == ["unit.risk"] and FakeAdmin.calls[1][0].topic_configs == {}
    assert "without log compaction" in caplog.text


async def test_other_errors_are_service_errors() -> None:
    FakeAdmin.script = [{"unit.events": 29}]  # TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(ServiceError, match=r"unit\.events.*error 29"):
        await topics.ensure_topics(SETTINGS)
    assert FakeAdmin.closed


LOCAL = SETTINGS.model_copy(update={"kafka_managed": True})
EXTERNAL = SETTINGS.model_copy(update={"kafka_managed": False})


async def test_the_changelog_is_created_deleted_and_created_again_on_the_local_broker() -> None:
    # Tansu deletes only a topic it knows, and keeps records sent to one before it existed: create, delete, create.
    FakeAdmin.script = [{"w-window-state-changelog": 36}, {}]
    await topics.recreate_changelog(LOCAL, "w-window-state-changelog")
    assert [[t.name for t in call] for call in FakeAdmin.calls] == [["w-window-state-changelog"]] * 2
    assert FakeAdmin.deleted == [["w-window-state-changelog"]]
    assert {(t.num_partitions, t.replication_factor) for call in FakeAdmin.calls for t in call} == {(6, 3)}
    assert all(t.topic_configs == {"cleanup.policy": "compact"} for call in FakeAdmin.calls for t in call)
    assert FakeAdmin.closed


async def test_on_an_external_broker_the_changelog_is_only_created_if_missing() -> None:
    FakeAdmin.script = [{"w-window-state-changelog": 36}]
    await topics.recreate_changelog(EXTERNAL, "w-window-state-changelog")
    assert len(FakeAdmin.calls) == 1 and FakeAdmin.deleted == []
    FakeAdmin.script = [{"w-window-state-changelog": 36}]
    FakeAdmin.partitions = {"w-window-state-changelog": 4}
    with pytest.raises(ConfigError, match="has 4 partitions"):
        await topics.recreate_changelog(EXTERNAL, "w-window-state-changelog")
    FakeAdmin.script = [{"w-window-state-changelog": 29}]
    with pytest.raises(ServiceError, match="error 29"):
        await topics.recreate_changelog(EXTERNAL, "w-window-state-changelog")
