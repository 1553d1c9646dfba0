"""Settings validation and the backend factory."""

from __future__ import annotations

import pytest

from frame_buffer.queue import QueueSettings, open_queue


@pytest.mark.parametrize(
    ("field", "value"),
    [("stream", ""), ("max_lag", 0), ("claim_min_idle_ms", 0), ("max_deliveries", 0), ("publish_timeout_s", -1)],
)
def test_invalid_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        QueueSettings(**{field: value})  # type: ignore[arg-type]


def test_unknown_backend_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="backend: must be one of redis, rabbitmq, memory"):
        open_queue("kafka")


def test_queues_are_context_managers() -> None:
    with open_queue("memory") as queue:
        assert queue.backend == "memory"
        assert queue.settings.dead_letter_stream == "frame_queue:dlq"


def test_nack_of_an_entry_already_acked_is_harmless() -> None:
    with open_queue("memory", settings=QueueSettings(groups=("g",))) as queue:
        queue.publish_many([])
        from tests.frames import make_frames

        queue.publish(make_frames(1)[0])
        (delivery,) = queue.consume("g", "c", block_ms=100)
        queue.ack([delivery])
        queue.nack(delivery)
        assert queue.consume("g", "c", block_ms=10) == []
