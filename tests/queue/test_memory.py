"""Memory-backend specifics the conformance suite does not reach."""

from __future__ import annotations

import pytest

from frame_buffer.queue import QueueSettings, open_queue


def test_listing_after_something_that_is_not_a_dead_letter_id() -> None:
    with open_queue("memory", settings=QueueSettings(groups=("g",))) as queue:
        with pytest.raises(ValueError, match=r"^after: '1-2' is not a dead-letter id of the memory backend$"):
            queue.dead_letters(after="1-2")
        assert queue.dead_letters(after="99999999999999999999-0") == []
