"""The parent's reads of a worker process's endpoints survive a child that ends mid-answer: a body cut short is
"did not answer" (a missed heartbeat), never an exception that kills the watcher thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from frame_buffer.config import Settings
from frame_buffer.supervisor import Supervisor
from frame_buffer.worker_processes import Child, WorkerProcesses, _get


@pytest.fixture
def cut_short() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback server that answers each request with the next canned reply, then closes the connection."""
    replies: list[bytes] = []
    done = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                if done.is_set():
                    return
                conn.recv(65536)
                if replies:
                    conn.sendall(replies.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, replies
    done.set()
    socket.create_connection(("127.0.0.1", port)).close()  # wakes the accept
    thread.join(5)
    server.close()
    assert not thread.is_alive()


def test_a_body_shorter_than_its_content_length_is_no_answer(cut_short: tuple[int, list[bytes]]) -> None:
    port, replies = cut_short
    replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 17685\r\n\r\n# HELP frame_queue")
    assert _get(port, "/metrics") is None


def test_a_reply_that_is_not_http_is_no_answer(cut_short: tuple[int, list[bytes]]) -> None:
    port, replies = cut_short
    replies.append(b"\x00\xffnot http at all\r\n\r\n")
    assert _get(port, "/healthz") is None


def test_bodies_that_do_not_parse_are_a_missed_read_not_an_exception(cut_short: tuple[int, list[bytes]]) -> None:
    port, replies = cut_short
    replies.extend([b"HTTP/1.0 200 OK\r\n\r\n{\"alive\": tr",  # /healthz cut where it has no length
                    b"HTTP/1.0 200 OK\r\n\r\n{}", b"HTTP/1.0 200 OK\r\n\r\n# TYPE x counter\n"])
    processes = WorkerProcesses(Settings(worker_processes=1), Supervisor())
    child = Child(0, "p-0", port=port)
    assert processes._read(child) is False
    assert child.health is None and child.snapshot == []
