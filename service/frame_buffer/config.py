"""One settings object for every command, from ``FRAME_BUFFER_*`` environment variables and an optional YAML file.

Precedence: defaults < YAML file < environment < command-line flags. A wrong value stops the start with the
field named (``ConfigError: FRAME_BUFFER_HTTP_PORT: must be an integer, got 'abc'``).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from frame_buffer.codec import FrameCodec
from frame_buffer.errors import ConfigError
from frame_buffer.queue import QueueSettings
from frame_buffer.wake_latency import DEVICE, NO_BOUND_US, WakeLatencyRequest, WakeLatencyUnavailable

ENV_PREFIX = "FRAME_BUFFER_"

__all__ = ["ENV_PREFIX", "ConfigError", "Settings"]


@dataclass(frozen=True)
class Settings:
    """Everything the service and the commands can be configured with.

    Args:
        backend: ``redis`` (default), ``rabbitmq`` or ``memory``.
        redis_url: Redis server of the ``redis`` backend.
        amqp_url: RabbitMQ broker of the ``rabbitmq`` backend.
        stream: stream / exchange name.
        group: consumer group of this service's workers; also declared up front.
        consumer_prefix: consumers are named ``<prefix>-<index>``; stable across restarts (default: hostname).
        workers: consumer threads in this process.
        handler: ``module:function`` called with each frame.
        sources: frame sources, ``kind:camera[:option=value...]`` (see ``sources/__init__.py``).
        http_host / http_port: where ``/metrics``, ``/healthz`` and ``/readyz`` are served.
        max_lag, publish_timeout_s, claim_min_idle_ms, max_deliveries: see :class:`QueueSettings`.
        policy: backpressure policy ``block``, ``drop_oldest`` or ``drop_newest``.
        buffer_budget_bytes: memory budget of the adaptive buffer and the spool together.
        retry_base_s / retry_cap_s: exponential backoff (full jitter) between handler retries.
        drain_timeout_s: how long a graceful shutdown may take.
        stall_timeout_s: a supervised service thread whose loop has not come round for this long makes
            ``/healthz`` answer 503 (so Docker restarts the container).
        compress / checksum / max_frame_bytes: wire codec options.
        log_format: ``text`` or ``json``. log_level: ``DEBUG``, ``INFO``, ...
        cpu_wake_latency_us: hold a PM QoS request bounding idle CPUs' wake-up latency while running (0: idle
            CPUs poll instead of halting); unset holds nothing. See ``wake_latency.py`` for why and its cost.
    """

    backend: str = "redis"
    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    stream: str = "frame_queue"
    group: str = "workers"
    consumer_prefix: str = field(default_factory=socket.gethostname)
    workers: int = 2
    handler: str = "frame_buffer.handlers:record_stats"
    sources: tuple[str, ...] = ("synthetic:cam0:fps=30:size=640x480",)
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    max_lag: int = 10_000
    publish_timeout_s: float = 30.0
    claim_min_idle_ms: int = 30_000
    max_deliveries: int = 5
    policy: str = "block"
    buffer_budget_bytes: int = 256 * 1024 * 1024
    retry_base_s: float = 0.1
    retry_cap_s: float = 10.0
    drain_timeout_s: float = 20.0
    stall_timeout_s: float = 60.0
    compress: bool = False
    checksum: str = "xxh3"
    max_frame_bytes: int = 32 * 1024 * 1024
    log_format: str = "text"
    log_level: str = "INFO"
    cpu_wake_latency_us: int | None = None

    def __post_init__(self) -> None:
        choices = {
            "backend": ("redis", "rabbitmq", "memory"),
            "policy": ("block", "drop_oldest", "drop_newest"),
            "checksum": ("xxh3", "none"),
            "log_format": ("text", "json"),
            "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{_env(name)}: must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("workers", "http_port", "max_lag", "claim_min_idle_ms", "max_deliveries",
                     "buffer_budget_bytes", "max_frame_bytes"):
            if getattr(self, name) < (0 if name == "http_port" else 1):
                raise ConfigError(f"{_env(name)}: must be positive, got {getattr(self, name)}")
        if not 0 <= self.http_port <= 65535:
            raise ConfigError(f"{_env('http_port')}: must be a port number, got {self.http_port}")
        for name in ("redis_url", "amqp_url", "stream", "group"):
            if not getattr(self, name):
                raise ConfigError(f"{_env(name)}: must not be empty")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{_env('redis_url')}: must start with redis://, rediss:// or unix://")
        if not self.amqp_url.startswith(("amqp://", "amqps://")):
            raise ConfigError(f"{_env('amqp_url')}: must start with amqp:// or amqps://")
        if not self.stall_timeout_s > 0:
            raise ConfigError(f"{_env('stall_timeout_s')}: must be positive, got {self.stall_timeout_s}")
        if self.cpu_wake_latency_us is not None and not 0 <= self.cpu_wake_latency_us <= NO_BOUND_US:
            raise ConfigError(f"{_env('cpu_wake_latency_us')}: must be 0 to {NO_BOUND_US} (microseconds), "
                              f"got {self.cpu_wake_latency_us}")
        if ":" not in self.handler:
            raise ConfigError(f"{_env('handler')}: must be module:function, got {self.handler!r}")

    # -- building blocks ---------------------------------------------------------------------------------
    def queue_settings(self) -> QueueSettings:
        """The queue part of the settings."""
        return QueueSettings(
            stream=self.stream, groups=(self.group,), max_lag=self.max_lag,
            publish_timeout_s=self.publish_timeout_s, claim_min_idle_ms=self.claim_min_idle_ms,
            max_deliveries=self.max_deliveries,
        )

    def codec(self) -> FrameCodec:
        """The wire codec these settings describe."""
        return FrameCodec(compress=self.compress, checksum=self.checksum,  # type: ignore[arg-type]
                          max_frame_bytes=self.max_frame_bytes)

    def wake_latency_request(self, device: Path = DEVICE) -> WakeLatencyRequest | None:
        """The CPU wake-up latency request these settings ask for, held until closed; None when unset."""
        if self.cpu_wake_latency_us is None:
            return None
        try:
            return WakeLatencyRequest(self.cpu_wake_latency_us, device)
        except WakeLatencyUnavailable as exc:
            raise ConfigError(f"{_env('cpu_wake_latency_us')}: {exc}") from exc

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (``None`` values are ignored), validated again."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # -- loading -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, config_file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults, then the YAML file (keys are field names), then ``FRAME_BUFFER_*`` variables."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        path = config_file or environ.get(f"{ENV_PREFIX}CONFIG")
        if path:
            try:
                loaded = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"config file {path}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {path}: must be a mapping of setting names to values")
            for key, value in loaded.items():
                if key not in known:
                    raise ConfigError(f"config file {path}: unknown setting {key!r}")
                values[key] = _convert(key, known[key].type, value, source=f"{path}: {key}")
        for name, spec in known.items():
            raw = environ.get(_env(name))
            if raw is not None:
                values[name] = _convert(name, spec.type, raw, source=_env(name))
        return cls(**values)


def _env(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def _convert(name: str, annotation: Any, value: Any, source: str) -> Any:
    kind = str(annotation)
    if kind == "int | None":
        if value is None or str(value).strip().lower() in ("", "none", "null"):
            return None
        kind = "int"
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind.startswith("tuple"):
            items = value if isinstance(value, list) else str(value).split(",")
            return tuple(str(item).strip() for item in items if str(item).strip())
        return str(value)
    except (TypeError, ValueError):
        article = "an" if kind == "int" else "a"
        expected = {"int": "integer", "float": "number", "bool": "boolean (true/false)"}.get(kind, kind)
        raise ConfigError(f"{source}: must be {article} {expected}, got {value!r}") from None
