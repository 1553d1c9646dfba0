"""Hostile entries XADDed raw (not through frame_buffer) into the stream of a live ``frame-buffer run`` and of a
live ``frame-buffer consume``: every valid frame is handled and acked exactly once, every other entry is
dead-lettered once with its reason, no thread dies, and the process ends cleanly.

One process per test, fed by every hypothesis example in turn; each example's frames have cameras of its own
(``<prefix>-<i>``), so what the handler recorded tells the examples apart.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REDIS_URL
from tests.hostile.entries import batches, valid_fields
from tests.hostile.streams import DeadLetters, write
from tests.servers import free_port, wait_until

FRAME_BUFFER = str(Path(sys.executable).with_name("frame-buffer"))
ROOT = Path(__file__).parents[2]
EXAMPLES = 60
BATCH = 12  # entries per example at most
LIVE = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Process:
    """A ``frame-buffer`` subcommand with its standard output and error in files of their own."""

    def __init__(self, tmp: Path, args: list[str], env: dict[str, str]) -> None:
        self.stdout_path, self.stderr_path = tmp / f"{args[0]}.out", tmp / f"{args[0]}.err"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.popen = subprocess.Popen([FRAME_BUFFER, *args], stdout=out, stderr=err,
                                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(30)


@pytest.fixture
def stream() -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(REDIS_URL)
    name = f"hostile_{uuid.uuid4().hex[:12]}"
    yield client, name
    client.delete(name, f"{name}:dlq")
    client.close()


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def recorded(path: Path) -> Counter[tuple[str, int]]:
    """(camera, seq) of every frame the recording handler was called with, counted."""
    if not path.exists():
        return Counter()
    lines = [line.split() for line in path.read_text().splitlines() if line]
    return Counter((fields[0], int(fields[1])) for fields in lines)


def no_traceback(process: Process) -> None:
    for name, text in (("stderr", process.stderr), ("stdout", process.stdout)):
        assert "Traceback" not in text, f"{name} of frame-buffer {process.popen.args[1]}:\n{text[-5000:]}"


def test_a_running_service_handles_valid_frames_once_and_dead_letters_every_hostile_entry(
    tmp_path: Path, stream: tuple[redis.Redis, str]
) -> None:
    client, name = stream
    group, port, record = "hostile", free_port(), tmp_path / "frames.txt"
    service = Process(tmp_path, ["run", "--no-sources", "--http-port", str(port), "--workers", "2"], {
        "FRAME_BUFFER_REDIS_URL": REDIS_URL, "FRAME_BUFFER_STREAM": name, "FRAME_BUFFER_GROUP": group,
        "FRAME_BUFFER_HTTP_HOST": "127.0.0.1", "FRAME_BUFFER_CONSUMER_PREFIX": "hostile",
        "FRAME_BUFFER_HANDLER": "tests.hostile.recording_handler:record", "RECORD_FRAMES_TO": str(record),
    })
    try:
        wait_until(lambda: http_status(port, "/healthz") == 200, 30, "the service's /healthz")
        letters = DeadLetters(client, name)
        examples = itertools.count()

        @LIVE
        @given(st.data())
        def example(data: st.DataObject) -> None:
            prefix = f"s{next(examples):06d}"  # one length: a replayed example draws the same
            written = write(client, name, data.draw(batches(prefix, BATCH), label="entries"))
            wanted = Counter((e.camera, e.seq) for e in written.values() if e.expected is None)
            invalid = [entry_id for entry_id, e in written.items() if e.expected is not None]

            def mine() -> Counter[tuple[str, int]]:
                return Counter({key: n for key, n in recorded(record).items() if key[0].startswith(f"{prefix}-")})

            wait_until(lambda: mine() == wanted and letters.holds(invalid)
                       and client.xpending(name, group)["pending"] == 0, 30,
                       f"example {prefix}: its frames handled and acked, its other entries dead-lettered")
            assert mine() == wanted, "each valid frame handled exactly once"
            letters.check(written)
            assert service.alive(), service.stderr[-5000:]

        example()
        assert len(letters.reasons()) >= 8, f"the examples met too few kinds of defect: {letters.reasons()}"
        assert http_status(port, "/healthz") == 200, "a thread died"
        assert service.alive()
        service.popen.send_signal(signal.SIGTERM)
        assert service.popen.wait(60) == 0, service.stderr[-5000:]
        no_traceback(service)
        assert client.xpending(name, group)["pending"] == 0
    finally:
        service.stop()


def test_consume_counts_every_valid_frame_once_and_dead_letters_every_hostile_entry(
    tmp_path: Path, stream: tuple[redis.Redis, str]
) -> None:
    """``consume --max-frames M`` stops by itself at M frames. After the examples, filler frames make up M: had
    any frame been consumed twice, it would stop before the last filler and leave it unread."""
    client, name = stream
    group, total = "hostile", 2 * EXAMPLES * BATCH + 1  # more than the examples can hold
    consume = Process(tmp_path, ["consume", "--group", group, "--json", "--max-frames", str(total),
                                 "--idle-exit", "600", "--batch", "16", "--consumer", "hostile"],
                      {"FRAME_BUFFER_REDIS_URL": REDIS_URL, "FRAME_BUFFER_STREAM": name})
    try:
        letters = DeadLetters(client, name)
        examples = itertools.count()
        counts = Counter[str]()

        def caught_up() -> bool:
            """Every entry delivered to the group, nothing pending."""
            (info,) = [g for g in client.xinfo_groups(name) if g["name"].decode() == group]
            last = client.xrevrange(name, count=1)[0][0]
            return bool(info["last-delivered-id"] == last and info["pending"] == 0)

        @LIVE
        @given(st.data())
        def example(data: st.DataObject) -> None:
            prefix = f"c{next(examples):06d}"  # one length: a replayed example draws the same
            written = write(client, name, data.draw(batches(prefix, BATCH), label="entries"))
            invalid = [entry_id for entry_id, e in written.items() if e.expected is not None]
            counts["valid"] += len(written) - len(invalid)
            counts["invalid"] += len(invalid)
            wait_until(lambda: letters.holds(invalid) and caught_up(), 30,
                       f"example {prefix}: its entries consumed and its other entries dead-lettered")
            letters.check(written)
            assert consume.alive(), consume.stderr[-5000:]

        example()
        assert len(letters.reasons()) >= 8, f"the examples met too few kinds of defect: {letters.reasons()}"
        fillers = total - counts["valid"]
        assert fillers >= 1
        pipe = client.pipeline(transaction=False)
        for seq in range(fillers):
            pipe.xadd(name, valid_fields("filler", seq))  # type: ignore[arg-type]
        pipe.execute()
        assert consume.popen.wait(60) == 0, consume.stderr[-5000:]
        no_traceback(consume)
        summary = json.loads(consume.stdout.splitlines()[-1])
        assert (summary["consumed"], summary["dead_lettered"]) == (total, counts["invalid"])
        assert caught_up(), "consume stopped before the last filler: some frame was consumed twice"
    finally:
        consume.stop()
