"""``frame-buffer dlq``: list, show, replay once, purge with confirmation; on memory and redis."""

from __future__ import annotations

import argparse
import json

import pytest

from frame_buffer.cli import build_parser, main
from frame_buffer.commands.dlq import run_on
from frame_buffer.queue import FrameQueue
from tests.conftest import REDIS_URL, QueueFactory
from tests.frames import make_frames


def dead_letter_three(queue: FrameQueue) -> list[str]:
    queue.publish_many(make_frames(3))
    for delivery in queue.consume("g", "c", count=3, block_ms=100):
        queue.dead_letter(delivery, "handler_error", f"ValueError: bad frame {delivery.frame.seq}")
    return [letter.id for letter in queue.dead_letters()]


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["dlq", *argv])


def test_list_show_replay_purge(make_queue: QueueFactory, capsys: pytest.CaptureFixture[str]) -> None:
    queue = make_queue(groups=("g",))
    ids = dead_letter_three(queue)
    assert run_on(queue, args("list", "--json")) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(x["id"], x["reason"], x["attempts"]) for x in listed] == [(i, "handler_error", 1) for i in ids]

    assert run_on(queue, args("show", ids[1], "--json")) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["header"]["cam"] == "cam0" and shown["header"]["seq"] == 1
    assert shown["error"] == "ValueError: bad frame 1"
    assert run_on(queue, args("show", "999-0")) == 1

    assert run_on(queue, args("replay", ids[0])) == 0
    assert "replayed 1 of 1" in capsys.readouterr().out
    assert run_on(queue, args("replay", ids[0])) == 1, "a dead letter is replayed once"
    (again,) = queue.consume("g", "c", count=10, block_ms=100)
    assert again.frame.seq == 0
    queue.ack([again])

    assert run_on(queue, args("purge"), ask=lambda prompt: "n") == 1
    assert len(queue.dead_letters()) == 2
    prompts: list[str] = []
    assert run_on(queue, args("purge", ids[1]), ask=lambda prompt: prompts.append(prompt) or "y") == 0
    assert "purge 1 dead letter(s)" in prompts[0]
    assert [letter.id for letter in queue.dead_letters()] == [ids[2]]

    def refuse(prompt: str) -> str:
        raise AssertionError("--yes must not ask")

    assert run_on(queue, args("purge", "--yes"), ask=refuse) == 0
    assert queue.dead_letters() == []


def test_replay_all(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",))
    dead_letter_three(queue)
    assert run_on(queue, args("replay", "--all")) == 0
    assert queue.dead_letters() == []
    assert sorted(d.frame.seq for d in queue.consume("g", "c", count=10, block_ms=100)) == [0, 1, 2]
    assert run_on(queue, args("replay")) == 2, "ids or --all"


def test_command_line_on_redis(stream_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from frame_buffer.queue import QueueSettings, open_queue

    queue = open_queue("redis", redis_url=REDIS_URL, settings=QueueSettings(stream=stream_name, groups=("g",)))
    try:
        dead_letter_three(queue)
        common = ["--backend", "redis", "--redis-url", REDIS_URL, "--stream", stream_name]
        assert main(["dlq", "list", *common]) == 0
        out = capsys.readouterr().out
        assert out.count("handler_error") == 3 and f"3 dead letter(s) shown from {stream_name}:dlq" in out
        assert main(["dlq", "purge", "--yes", *common]) == 0
        assert "purged 3" in capsys.readouterr().out
        assert queue.dead_letters() == []
    finally:
        queue.client.delete(stream_name, f"{stream_name}:dlq")
        queue.close()
