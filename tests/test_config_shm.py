"""The payload store's settings (issue 18): FRAME_BUFFER_PAYLOAD_STORE, _SHM_BYTES, _SHM_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest

from frame_buffer.config import ConfigError, Settings
from frame_buffer.queue.redis_streams import RedisStreamsQueue
from frame_buffer.queue.redis_streams.shm import ShmStreamsQueue
from frame_buffer.queue.settings import RedisOptions
from tests.conftest import REDIS_URL


def test_inline_is_the_default_and_opens_the_queue_of_before() -> None:
    settings = Settings.load(environ={"FRAME_BUFFER_REDIS_URL": REDIS_URL})
    assert settings.redis_options() == RedisOptions() and settings.queue_settings().payload_store == "inline"
    queue = settings.open_queue(groups=[])
    assert type(queue) is RedisStreamsQueue
    queue.close()


def test_shm_opens_the_store_backed_queue(tmp_path: Path) -> None:
    environ = {"FRAME_BUFFER_PAYLOAD_STORE": "shm", "FRAME_BUFFER_SHM_BYTES": "67108864",
               "FRAME_BUFFER_SHM_DIR": str(tmp_path), "FRAME_BUFFER_REDIS_URL": REDIS_URL}
    settings = Settings.load(environ=environ)
    queue = settings.open_queue(groups=[])
    assert type(queue) is ShmStreamsQueue
    assert (queue.store_directory, queue.store_bytes) == (tmp_path / "frame_queue", 67108864)
    queue.close()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FRAME_BUFFER_PAYLOAD_STORE": "disk"}, "FRAME_BUFFER_PAYLOAD_STORE: must be one of inline, shm"),
        ({"FRAME_BUFFER_SHM_BYTES": "1000"}, "FRAME_BUFFER_SHM_BYTES: must be at least 1048576"),
        ({"FRAME_BUFFER_SHM_DIR": "shm"}, "FRAME_BUFFER_SHM_DIR: must be an absolute path, got 'shm'"),
        ({"FRAME_BUFFER_PAYLOAD_STORE": "shm", "FRAME_BUFFER_BACKEND": "rabbitmq"},
         "FRAME_BUFFER_PAYLOAD_STORE: shm works with the redis backend on one stream"),
        ({"FRAME_BUFFER_PAYLOAD_STORE": "shm", "FRAME_BUFFER_SHARDS": "4"}, "FRAME_BUFFER_PAYLOAD_STORE: shm works"),
        ({"FRAME_BUFFER_PAYLOAD_STORE": "shm", "FRAME_BUFFER_SHM_BYTES": "33554432"},
         "FRAME_BUFFER_SHM_BYTES: must hold the largest frame, at least max_frame_bytes . 64 = 33554496, got 33554432"),
        ({"FRAME_BUFFER_PAYLOAD_STORE": "shm", "FRAME_BUFFER_SHM_BYTES": "1048576",
          "FRAME_BUFFER_MAX_FRAME_BYTES": "2000000"}, "FRAME_BUFFER_SHM_BYTES: must hold the largest frame"),
    ],
)
def test_wrong_store_settings_are_refused_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ=environ)
