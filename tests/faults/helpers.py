"""Shared pieces of the fault tests: consumer processes, counting, and the printed tally."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import redis

from frame_buffer.queue import DeadLetter, FrameQueue

REPO = Path(__file__).resolve().parents[2]


class ConsumerProcess:
    """``tests/faults/consumer_proc.py`` in its own process; ``delivered()`` reads what it handled."""

    #: Every process started and not yet reaped: the autouse fixture in conftest.py kills what a failed test left.
    started: ClassVar[list[ConsumerProcess]] = []

    def __init__(self, workdir: Path, url: str, name: str, *extra: str, stream: str = "frame_queue",
                 backend: str = "redis") -> None:
        self.out = workdir / f"consumer-{name}.log"
        self.out.touch()
        args = [sys.executable, "-m", "tests.faults.consumer_proc", "--backend", backend, "--url", url,
                "--stream", stream, "--name", name, "--out", str(self.out), *extra]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO)
        ConsumerProcess.started.append(self)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    @classmethod
    def kill_leftovers(cls) -> None:
        """SIGKILL every consumer process still running (after a test, whatever its outcome)."""
        for consumer in cls.started:
            if consumer.alive():
                consumer.kill()
        cls.started.clear()

    def delivered(self) -> list[tuple[str, int]]:
        """Every (camera, seq) the handler finished, in order, duplicates included."""
        return [(cam, seq) for cam, seq, _attempts in self.deliveries()]

    def deliveries(self) -> list[tuple[str, int, int]]:
        """Every (camera, seq, attempts) the handler finished, in order: attempts > 1 is a redelivery."""
        lines = self.out.read_text().splitlines()
        return [(cam, int(seq), int(attempts)) for cam, seq, attempts in (line.split() for line in lines)]

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, nothing acked."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> dict[str, int]:
        """SIGTERM, and the worker's summary."""
        if not self.alive():
            return {}
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        return dict(json.loads(out.strip().splitlines()[-1]))


def all_dead_letters(queue: FrameQueue) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    after = None
    while page := queue.dead_letters(count=500, after=after):
        letters.extend(page)
        after = page[-1].id
    return letters


def tally(test: str, published: int, delivered: list[tuple[str, int]], dropped: dict[str, int],
          dead_letters: list[DeadLetter], **extra: Any) -> dict[str, Any]:
    """Print the counts every fault test reports, and return them for the assertions."""
    distinct = len(set(delivered))
    counts = {
        "published": published, "delivered": distinct, "duplicates": len(delivered) - distinct,
        "dropped": sum(dropped.values()), "dead_lettered": len(dead_letters),
        "dead_letter_reasons": dict(Counter(letter.reason for letter in dead_letters)), **extra,
    }
    print(f"\n[{test}] " + " ".join(f"{k}={v}" for k, v in counts.items()))
    return counts


def redis_info(url: str, section: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    try:
        return dict(client.info(section))
    finally:
        client.close()
