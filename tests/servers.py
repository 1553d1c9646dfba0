"""Throwaway servers on free ports for tests that kill, restart or reconfigure them.

The machine's own Redis (6379) and RabbitMQ (5672) are shared by the whole suite and never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():  # type: ignore[operator]
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def write_malformed_entries(port: int, count: int, stream: str = "frame_queue") -> None:
    """XADD ``count`` entries no consumer can decode, straight from redis-cli, cycling through four kinds:
    no header (``missing_header``), no payload (``missing_payload``), a header that is not msgpack
    (``bad_header``), and neither field (``missing_header``)."""
    kinds = ("p junk{i}", "h junk{i}", "h junk{i} p junk", "something else{i}")
    commands = "".join(f"XADD {stream} * {kinds[i % 4].format(i=i)}\n" for i in range(count))
    subprocess.run(["redis-cli", "-p", str(port)], input=commands, text=True, check=True, capture_output=True)


class RedisServer:
    """A redis-server of our own, in ``workdir``, with AOF ``appendfsync always`` unless told otherwise.

    With ``password`` it requires it (``requirepass``); :attr:`url` and :meth:`client` then carry it. With
    ``username`` too, the users come from an ACL file the caller passes in ``extra`` (``--aclfile``): no
    ``requirepass`` then, and :attr:`url` and :meth:`client` log in as that user.
    """

    def __init__(self, workdir: Path, *extra: str, port: int | None = None, password: str | None = None,
                 username: str | None = None) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run scripts/setup.sh")
        self.workdir = workdir
        self.port = port or free_port()
        self.extra = (*extra, "--requirepass", password) if password is not None and username is None else extra
        self.password = password
        self.username = username
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f"{self.username or ''}:{self.password}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            "--maxmemory-policy", "noeviction", "--logfile", str(self.workdir / "redis.log"), *self.extra,
        ]
        self.process = subprocess.Popen(args)
        client = self.client()
        wait_until(client.ping, 30, f"redis-server on port {self.port}")
        client.close()
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, username=self.username, password=self.password)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.resume()
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


class RabbitMQNode:
    """A RabbitMQ node of our own (Debian's ``rabbitmq-server``), on free ports, with its data in ``workdir``.

    Everything a node reads is pointed into ``workdir`` (config, env file, plugins file, Mnesia and log
    directories, and ``HOME``, where Erlang creates the node's cookie), so the machine's node (5672,
    ``/etc/rabbitmq``, ``rabbit@localhost``) is neither read nor touched. Nothing here needs the cookie: the
    node is only spoken to over AMQP.
    """

    SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # not /usr/sbin's wrapper: that one su's to rabbitmq

    def __init__(self, workdir: Path) -> None:
        if not Path(self.SERVER).exists():
            raise RuntimeError("rabbitmq-server is not installed: run scripts/setup.sh")
        self.workdir = workdir
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"fbtest{self.port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _environment(self) -> dict[str, str]:
        work = self.workdir
        (work / "enabled_plugins").write_text("[].\n")
        (work / "rabbitmq.conf").write_text("loopback_users = none\n")
        (work / "rabbitmq-env.conf").write_text("")
        return {
            **os.environ,
            "HOME": str(work),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(work / "mnesia"),
            "RABBITMQ_LOG_BASE": str(work / "log"),
            "RABBITMQ_PID_FILE": str(work / "beam.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(work / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(work / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(work / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(work / "rabbitmq-env.conf"),
        }

    def start(self, timeout: float = 60.0) -> RabbitMQNode:
        """Start the node and wait until it accepts AMQP connections."""
        import pika

        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "beam.pid").unlink(missing_ok=True)
        with open(self.workdir / "server.log", "ab") as log:
            self.process = subprocess.Popen([self.SERVER], env=self._environment(), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        params = pika.URLParameters(self.url)
        params.connection_attempts = 1
        wait_until(lambda: pika.BlockingConnection(params).close() is None, timeout,
                   f"rabbitmq node {self.name} on port {self.port}", interval=0.1)
        return self

    def beam_pid(self) -> int:
        """The OS pid of this node's Erlang VM (beam.smp), from the pid file the node writes."""
        return int((self.workdir / "beam.pid").read_text().strip())

    def kill(self) -> None:
        """SIGKILL this node's Erlang VM only: no shutdown, no flush; the wrapper script then exits."""
        assert self.process is not None
        os.kill(self.beam_pid(), signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # the wrapper script stops the node on TERM
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.beam_pid(), signal.SIGKILL)
                self.process.wait(timeout=30)
            self.process = None
