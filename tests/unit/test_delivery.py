"""What the worker sends again when the broker refuses a message (pingan.streams.app.is_retriable). No I/O."""

from __future__ import annotations

from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    UnknownError,
)

from pingan.streams.app import MAX_COLLISIONS, is_retriable


def test_what_can_pass_later_is_sent_again_anywhere() -> None:
    for cause in (NotLeaderForPartitionError(), KafkaConnectionError(), KafkaTimeoutError(), OSError()):
        assert is_retriable(cause, 0, local_broker=False)
        assert is_retriable(cause, 99, local_broker=True)


def test_a_message_the_broker_can_never_take_is_not() -> None:
    assert not is_retriable(MessageSizeTooLargeError(), 0, local_broker=True)
    assert not is_retriable(ValueError(), 0, local_broker=True)


def test_an_unknown_server_error_is_a_collision_on_the_local_broker_and_passes_after_a_few_tries() -> None:
    # Tansu moves a partition's end past each failed write, so a collision with records it kept from before the
    # topic existed passes; elsewhere the error is the broker's own and a retry would only repeat it.
    assert all(is_retriable(UnknownError(), tried, local_broker=True) for tried in range(MAX_COLLISIONS))
    assert not is_retriable(UnknownError(), MAX_COLLISIONS, local_broker=True)
    assert not is_retriable(UnknownError(), 0, local_broker=False)
