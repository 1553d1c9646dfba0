"""Health that tells the truth: a worker thread killed for real is restarted, counted and logged with its
traceback; a crash loop and a handler that never returns turn /healthz 503, naming the thread and why."""

from __future__ import annotations

from pathlib import Path

import redis

from tests.conftest import REDIS_URL
from tests.servers import wait_until
from tests.service.running import RunningService

HANDLERS = "tests.service.hostile_handlers"


def env_with(service_env: dict[str, str], handler: str, **extra: str) -> dict[str, str]:
    return {**service_env, "FRAME_BUFFER_SOURCES": "synthetic:cam0:fps=50:size=16x16", "FRAME_BUFFER_WORKERS": "1",
            "FRAME_BUFFER_HANDLER": f"{HANDLERS}:{handler}", **extra}


def thread(service: RunningService, name: str) -> dict[str, object]:
    return next(t for t in service.json("/healthz")["threads"] if t["thread"] == name)


def test_a_worker_thread_killed_by_its_handler_is_restarted_counted_and_logged(
    tmp_path: Path, service_env: dict[str, str], stream_name: str
) -> None:
    service = RunningService(tmp_path, env_with(service_env, "die_once"))
    try:
        wait_until(lambda: service.metric('frame_queue_thread_restarts_total{thread="worker-0"}') == 1, 30,
                   "the worker's restart to be counted")
        acked = service.metric("frame_queue_acked_total")
        wait_until(lambda: service.metric("frame_queue_acked_total") >= acked + 50, 30, "acks after the restart")
        status, _ = service.get("/healthz")
        assert status == 200
        worker = thread(service, "worker-0")
        assert worker["restarts"] == 1 and worker["state"] == "running"
        assert "ThreadKill: the test handler kills its thread" in str(worker["last_error"])
    finally:
        code = service.terminate()
    assert code == 0, service.log()
    died = [e for e in service.events() if e["msg"].startswith("thread worker-0 died (1 in a row), restarting in")]
    assert len(died) == 1, service.log()
    assert "Traceback" in died[0].get("exc_info", "") + service.log() and "ThreadKill" in service.log()
    # The batch in hand when the thread died stayed pending and was handled after the restart: nothing lost.
    drained, acked_total = service.drain_summary()
    client = redis.Redis.from_url(REDIS_URL)
    (group,) = client.xinfo_groups(stream_name)
    assert group["pending"] == 0
    assert drained["submitted"] == drained["published"] and not drained["dropped"]
    assert acked_total + group["lag"] == drained["published"], "a published frame was neither acked nor kept"


def test_a_crash_loop_turns_healthz_503_naming_the_thread(tmp_path: Path, service_env: dict[str, str]) -> None:
    service = RunningService(tmp_path, env_with(service_env, "die_always"))
    try:
        wait_until(lambda: service.get("/healthz")[0] == 503, 60, "/healthz to report the crash loop")
        health = service.json("/healthz")
        assert health["status"] == "unhealthy"
        (problem,) = health["problems"]
        assert problem["thread"] == "worker-0"
        assert problem["why"].startswith("crash loop: died 5 times in a row, last: ThreadKill")
        assert service.metric('frame_queue_thread_restarts_total{thread="worker-0"}') >= 5
    finally:
        code = service.terminate()
    assert code == 0, service.log()


def test_a_handler_that_never_returns_turns_healthz_503_after_the_stall_limit(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    service = RunningService(tmp_path, env_with(service_env, "hang", FRAME_BUFFER_STALL_TIMEOUT_S="5",
                                                FRAME_BUFFER_PUBLISH_TIMEOUT_S="2", FRAME_BUFFER_DRAIN_TIMEOUT_S="3"))
    try:
        wait_until(lambda: service.get("/healthz")[0] == 503, 30, "/healthz to report the stalled worker")
        problems = service.json("/healthz")["problems"]
        assert [p["thread"] for p in problems] == ["worker-0"], problems
        assert problems[0]["why"].startswith("no progress for") and "stall limit 5s" in problems[0]["why"]
    finally:
        code = service.terminate()
    # The hung handler holds its frame: the drain gives up on it after its limit and says so.
    assert code == 1, service.log()
    assert any("worker-0 is still busy at the drain timeout" in m for m in service.messages())
