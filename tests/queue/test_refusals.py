"""A server that answers but refuses us (credentials, ACL, permissions) is :class:`BackendRefused` (exit 2),
with the server's address and its reason and never the password; a server that does not answer stays
:class:`BackendUnavailable` (exit 3)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from frame_buffer.errors import EXIT_CONFIG, EXIT_UNREACHABLE
from frame_buffer.queue import BackendRefused, BackendUnavailable, QueueSettings
from frame_buffer.queue.rabbitmq import RabbitMQQueue
from frame_buffer.queue.rabbitmq import masked_url as rabbitmq_masked_url
from frame_buffer.queue.redis_streams import RedisStreamsQueue, masked_url
from tests.conftest import AMQP_URL
from tests.frames import make_frames
from tests.servers import RedisServer, free_port

PASSWORD = "s3cret-pw"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own that requires :data:`PASSWORD`."""
    server = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    yield server
    server.stop()


def assert_refused(exc: BaseException, address: str, *reasons: str) -> None:
    message = str(exc)
    assert isinstance(exc, BackendRefused) and exc.exit_code == EXIT_CONFIG
    assert address in message and all(reason in message for reason in reasons), message
    assert PASSWORD not in message and "wrong-pw" not in message and "\n" not in message


def test_masked_url_hides_only_the_password() -> None:
    assert masked_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert masked_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert masked_url("redis://h:1/0") == "redis://h:1/0"
    assert rabbitmq_masked_url("amqp://guest:guest@h:5672/%2F") == "amqp://guest:***@h:5672/%2F"
    assert rabbitmq_masked_url("amqp://h:5672/%2F") == "amqp://h:5672/%2F"


@pytest.mark.parametrize(("auth", "reason"), [("", "NOAUTH"), (":wrong-pw@", "WRONGPASS"), ("nobody:x@", "WRONGPASS")])
def test_redis_missing_or_wrong_password_is_refused(locked_redis: RedisServer, auth: str, reason: str) -> None:
    address = f"127.0.0.1:{locked_redis.port}"
    queue = RedisStreamsQueue(f"redis://{auth}{address}/0")
    for operation in (lambda: queue.publish(make_frames(1)[0]), lambda: queue.consume("g", "c", block_ms=10),
                      lambda: queue.stats("g"), queue.dead_letters, lambda: queue.ensure_group("g")):
        with pytest.raises(BackendRefused) as refused:
            operation()
        assert_refused(refused.value, address, reason)
    queue.close()


def test_redis_acl_user_without_xadd_is_refused_on_publish_and_on_dead_lettering(locked_redis: RedisServer) -> None:
    admin = locked_redis.client()
    admin.acl_setuser("reader", enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], commands=["+@all", "-xadd"])
    address = f"127.0.0.1:{locked_redis.port}"
    reader = RedisStreamsQueue(f"redis://reader:{PASSWORD}@{address}/0", QueueSettings(groups=("g",)))
    with pytest.raises(BackendRefused) as refused:
        reader.publish(make_frames(1)[0])
    assert_refused(refused.value, address, "NOPERM", "xadd", "redis://reader:***@")
    with pytest.raises(BackendRefused) as refused:  # two frames: one MULTI/EXEC
        reader.publish_many(make_frames(2))
    assert_refused(refused.value, address, "NOPERM")
    admin.xadd(reader.settings.stream, {"p": b"no header"})  # undecodable: dead-lettering it takes an XADD
    with pytest.raises(BackendRefused) as refused:
        reader.consume("g", "c", block_ms=100)
    assert_refused(refused.value, address, "NOPERM")
    assert reader.stats("g").pending == 1, "the refused dead letter stays pending, nothing lost"
    reader.close()
    admin.close()


def test_redis_unreachable_stays_backend_unavailable() -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable) as unavailable:
        RedisStreamsQueue(f"redis://:{PASSWORD}@127.0.0.1:{port}/0").stats("g")
    assert not isinstance(unavailable.value, BackendRefused)
    assert unavailable.value.exit_code == EXIT_UNREACHABLE
    assert f"127.0.0.1:{port}" in str(unavailable.value) and PASSWORD not in str(unavailable.value)


def test_rabbitmq_wrong_password_is_refused_until_it_is_right() -> None:
    url = AMQP_URL.replace("guest:guest@", "guest:wrong-pw@")
    assert url != AMQP_URL
    queue = RabbitMQQueue(url, backoff_s=(60, 60))  # the constructor's failed attempt: the next is a minute away
    address = queue.address
    for operation in (lambda: queue.publish(make_frames(1)[0]), lambda: queue.consume("g", "c", block_ms=10),
                      lambda: queue.stats("g"), queue.dead_letters):
        with pytest.raises(BackendRefused) as refused:
            operation()
        assert_refused(refused.value, address, "ACCESS_REFUSED", "guest:***@")
    queue.close()
    retrying = RabbitMQQueue(url, backoff_s=(0, 0))  # no backoff: every call asks the broker again
    with pytest.raises(BackendRefused) as refused:
        retrying.ensure_group("g")
    assert_refused(refused.value, address, "ACCESS_REFUSED")
    retrying.close()


def test_rabbitmq_unknown_vhost_is_refused() -> None:
    url = AMQP_URL.rpartition("/")[0] + f"/no-such-vhost-{uuid.uuid4().hex[:6]}"
    queue = RabbitMQQueue(url, backoff_s=(0, 0))
    with pytest.raises(BackendRefused) as refused:
        queue.stats("g")
    assert_refused(refused.value, queue.address, "NOT_ALLOWED")
    queue.close()


def test_rabbitmq_access_refused_channel_close_is_refused() -> None:
    # The broker refuses names under amq.* with 403 ACCESS_REFUSED, as it refuses a user without the
    # configure permission: the same channel close, produced here without a user of our own on the shared broker.
    settings = QueueSettings(stream=f"amq.test_{uuid.uuid4().hex[:8]}")
    queue = RabbitMQQueue(AMQP_URL, settings)
    with pytest.raises(BackendRefused) as refused:
        queue.publish(make_frames(1)[0])
    assert_refused(refused.value, queue.address, "ACCESS_REFUSED", "amq.")
    queue.close()  # nothing to clean up: the first declare was refused


def test_rabbitmq_unreachable_stays_backend_unavailable() -> None:
    port = free_port()
    queue = RabbitMQQueue(f"amqp://guest:{PASSWORD}@127.0.0.1:{port}/%2F", backoff_s=(0, 0))
    with pytest.raises(BackendUnavailable) as unavailable:
        queue.stats("g")
    assert not isinstance(unavailable.value, BackendRefused)
    assert unavailable.value.exit_code == EXIT_UNREACHABLE and PASSWORD not in str(unavailable.value)
    queue.close()


def test_redis_replica_is_refused(tmp_path: Path) -> None:
    # A replica whose primary is not even there: it answers, and refuses every write.
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(free_port())).start()
    try:
        queue = RedisStreamsQueue(replica.url)
        with pytest.raises(BackendRefused) as refused:
            queue.publish(make_frames(1)[0])
        assert_refused(refused.value, f"127.0.0.1:{replica.port}", "READONLY", "point the URL at the primary")
        queue.close()
    finally:
        replica.stop()


def test_redis_without_the_xgroup_command_is_reported_as_redis_says(tmp_path: Path) -> None:
    # Not a refusal of ours to name: a server built or configured without a stream command is a broken install.
    server = RedisServer(tmp_path / "redis", "--rename-command", "XGROUP", "").start()
    try:
        with pytest.raises(redis.ResponseError, match="unknown command 'XGROUP'"):
            RedisStreamsQueue(server.url, QueueSettings(groups=("g",)))
    finally:
        server.stop()
