"""``frame-buffer run`` as a real process, for the service tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.servers import free_port, wait_until

FRAME_BUFFER = str(Path(sys.executable).with_name("frame-buffer"))
ROOT = Path(__file__).parents[2]


class RunningService:
    """A ``frame-buffer run`` process with JSON logs captured to a file.

    Args:
        tmp: where the log goes.
        env: FRAME_BUFFER_* settings on top of the test defaults (loopback HTTP on a free port, JSON logs).
        wait: wait for the first /healthz 200 before returning.
        name: of the log file (two services in one test).
    """

    def __init__(self, tmp: Path, env: dict[str, str], *, wait: bool = True, name: str = "service") -> None:
        self.port = free_port()
        self.log_path = tmp / f"{name}.log"
        self.env = {**os.environ, "FRAME_BUFFER_HTTP_PORT": str(self.port), "FRAME_BUFFER_HTTP_HOST": "127.0.0.1",
                    "FRAME_BUFFER_LOG_FORMAT": "json", "FRAME_BUFFER_CONSUMER_PREFIX": "svc-test",
                    "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))), **env}
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen([FRAME_BUFFER, "run"], env=self.env, stdout=log, stderr=log)
        if wait:
            wait_until(lambda: self.get("/healthz")[0] == 200, 30, "the service's /healthz")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def json(self, path: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self.get(path)[1])  # type: ignore[no-any-return]

    def metric(self, name: str) -> float:
        """Sum of all samples of ``name`` on /metrics (``name`` may carry a label selector)."""
        _, text = self.get("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and (line[len(name)] in " {" or name.endswith("}")))

    def log(self) -> str:
        return self.log_path.read_text()

    def events(self) -> list[dict[str, str]]:
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def messages(self) -> list[str]:
        return [event["msg"] for event in self.events()]

    def drain_summary(self) -> tuple[dict[str, int], int]:
        """The producer's "producer drained: {...}" counts and the frames all workers acked, from the logs of a
        stopped service: what a lossless shutdown is checked against."""
        events = self.events()
        # A service of the workers role has no producer: no counts.
        producer = next((_counts(e["msg"]) for e in events if e["msg"].startswith("producer drained")), {})
        acked = sum(_counts(e["msg"])["acked"] for e in events if e["msg"].startswith("worker svc-test-"))
        return producer, acked

    def terminate(self, timeout: float = 60, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def _counts(msg: str) -> dict[str, int]:
    """The JSON object after the first ": " of a stop summary line."""
    return json.loads(msg.split(": ", 1)[1])  # type: ignore[no-any-return]
