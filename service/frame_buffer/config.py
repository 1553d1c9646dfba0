"""One settings object for every command, from ``FRAME_BUFFER_*`` environment variables and an optional YAML file.

Precedence: defaults < YAML file < environment < command-line flags. A wrong value stops the start with the
field named (``ConfigError: FRAME_BUFFER_HTTP_PORT: must be an integer, got 'abc'``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import yaml

from frame_buffer.checks import (
    AMQP_URL,
    DAY_S,
    HANDLER,
    HOST,
    NAME,
    PRINTABLE_ITEMS,
    REDIS_URL,
    Bound,
    amqp_url_problem,
    field_problems,
    name_problem,
    redis_seeds_problem,
    redis_url_problem,
    server_address,
    show,
    unwrap,
)
from frame_buffer.codec import DEFAULT_MAX_FRAME_BYTES, Checksum, FrameCodec
from frame_buffer.errors import ConfigError
from frame_buffer.flow.backpressure import Policy
from frame_buffer.queue import FrameQueue, open_queue
from frame_buffer.queue.settings import (
    DEFAULT_AMQP_URL,
    DEFAULT_REDIS_URL,
    Backend,
    QueueOptions,
    QueueSettings,
    RedisOptions,
)
from frame_buffer.wake_latency import DEVICE, NO_BOUND_US, WakeLatencyRequest, WakeLatencyUnavailable

ENV_PREFIX = "FRAME_BUFFER_"
#: The one FRAME_BUFFER_* variable that is not a setting: the YAML file to read.
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
#: Largest frame a setting may allow: Redis refuses a bulk string over 512 MiB (proto-max-bulk-len).
MAX_FRAME_BYTES_LIMIT = 512 * 1024 * 1024

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
#: What ``run`` runs: sources and producer (``ingest``), consumers (``workers``), or both (``all``).
Role = Literal["all", "ingest", "workers"]
#: How the ``redis`` backend reaches Redis: one server (``standalone``) or a Redis Cluster (``cluster``).
RedisMode = Literal["standalone", "cluster"]
#: Shard streams when ``shards`` is unset, per mode: one (today's single stream key) or several per master.
DEFAULT_SHARDS: dict[str, int] = {"standalone": 1, "cluster": 16}

__all__ = [
    "CONFIG_ENV", "DEFAULT_SHARDS", "ENV_PREFIX", "MAX_FRAME_BYTES_LIMIT", "Bound", "ConfigError", "LogFormat",
    "LogLevel", "RedisMode", "Role", "SettingError", "Settings", "amqp_url_problem", "name_problem",
    "redis_url_problem", "show",
]


class SettingError(ConfigError):
    """A setting's value is wrong. ``setting`` is its name, ``reason`` the message without the name, so the
    loader can name where the value came from (YAML key, environment variable or command-line flag).

    ``related``: other settings the check involved (``retry_base_s`` for ``retry_cap_s``); the loader names
    the first one the user actually set.
    """

    def __init__(self, setting: str, reason: str, label: str | None = None, related: tuple[str, ...] = ()) -> None:
        super().__init__(f"{label or _env(setting)}: {reason}")
        self.setting = setting
        self.reason = reason
        self.related = related


_SEVERAL_URLS = "several URLs (seed nodes) need redis_mode cluster (FRAME_BUFFER_REDIS_MODE); standalone takes one"
_PORT = Bound(0, 65535, says="must be a port number (0 to 65535; 0 picks a free one)")
_WAKE_LATENCY_US = Bound(0, NO_BOUND_US, says=f"must be 0 to {NO_BOUND_US} (microseconds)")


@dataclass(frozen=True)
class Settings(QueueOptions):
    """Everything the service and the commands can be configured with: one flat name per setting (the
    variable is ``FRAME_BUFFER_<NAME>``, the YAML key ``<name>``, the flag ``--<name>``).

    The queue's settings (``stream``, ``max_lag``, ``publish_timeout_s``, ``claim_min_idle_ms``,
    ``max_deliveries``) are inherited from :class:`~frame_buffer.queue.settings.QueueOptions`, with their
    defaults and checks; every field's check is in its annotation (see ``frame_buffer.checks``).

    Args:
        backend: ``redis`` (default), ``rabbitmq`` or ``memory``.
        redis_mode: ``standalone`` (one Redis server) or ``cluster`` (a Redis Cluster: docs/scaling.md).
        redis_url: Redis server of the ``redis`` backend; in ``cluster`` mode one or more comma-separated seed
            nodes (``redis://`` or ``rediss://``, database 0, the same credentials).
        shards: shard streams of the ``redis`` backend (1 to 1024); unset: 1 in ``standalone`` mode (the one
            stream key of before), 16 in ``cluster`` mode (see :attr:`shard_count`).
        redis_replica_acks: after each publish, ``WAIT`` until this many replicas have it (0: do not wait);
            fewer within ``redis_replica_timeout_ms`` is a failed publish (retried, then spooled).
        redis_replica_timeout_ms: how long that ``WAIT`` may take.
        amqp_url: RabbitMQ broker of the ``rabbitmq`` backend.
        group: consumer group of this service's workers; also declared up front.
        consumer_prefix: consumers are named ``<prefix>-<index>``; stable across restarts (default: hostname).
        role: what ``run`` runs: ``all`` (sources, producer and workers), ``ingest`` (sources and producer) or
            ``workers`` (consumers only); the settings of the part not run are ignored.
        workers: consumer threads in this process, or in each worker process.
        worker_processes: 0 runs the workers as threads of this process; N starts N worker processes
            (``worker_processes.py``), whose consumers are ``<prefix>-<process>-<index>``.
        handler: ``module:function`` called with each frame.
        sources: frame sources, ``kind:camera[:option=value...]`` (see ``sources/__init__.py``).
        http_host / http_port: where ``/metrics``, ``/healthz`` and ``/readyz`` are served.
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

    backend: Backend = "redis"
    redis_mode: RedisMode = "standalone"
    redis_url: Annotated[str, REDIS_URL] = DEFAULT_REDIS_URL
    shards: Annotated[int | None, Bound(1, 1024)] = None
    redis_replica_acks: Annotated[int, Bound(0, 16)] = 0
    redis_replica_timeout_ms: Annotated[int, Bound(1, 60_000)] = 1000
    amqp_url: Annotated[str, AMQP_URL] = DEFAULT_AMQP_URL
    group: Annotated[str, NAME] = "workers"
    consumer_prefix: Annotated[str, NAME] = field(default_factory=socket.gethostname)
    role: Role = "all"
    workers: Annotated[int, Bound(1, 1024)] = 2
    worker_processes: Annotated[int, Bound(0, 256)] = 0
    handler: Annotated[str, HANDLER] = "frame_buffer.handlers:record_stats"
    sources: Annotated[tuple[str, ...], PRINTABLE_ITEMS] = ("synthetic:cam0:fps=30:size=640x480",)
    http_host: Annotated[str, HOST] = "0.0.0.0"
    http_port: Annotated[int, _PORT] = 8080
    policy: Policy = "block"
    buffer_budget_bytes: Annotated[int, Bound(1, 2**40)] = 256 * 1024 * 1024
    retry_base_s: Annotated[float, Bound(0, 3600)] = 0.1
    retry_cap_s: Annotated[float, Bound(0, 3600)] = 10.0
    drain_timeout_s: Annotated[float, Bound(0, DAY_S, low_open=True)] = 20.0
    stall_timeout_s: Annotated[float, Bound(0, DAY_S, low_open=True)] = 60.0
    compress: bool = False
    checksum: Checksum = "xxh3"
    max_frame_bytes: Annotated[int, Bound(1, MAX_FRAME_BYTES_LIMIT)] = DEFAULT_MAX_FRAME_BYTES
    log_format: LogFormat = "text"
    log_level: LogLevel = "INFO"
    cpu_wake_latency_us: Annotated[int | None, _WAKE_LATENCY_US] = None

    def __post_init__(self) -> None:
        for name, reason, related in self._problems():
            raise SettingError(name, reason, related=related)

    def _problems(self) -> Iterator[tuple[str, str, tuple[str, ...]]]:
        """Every value that is wrong, as (setting, reason, related settings); types were checked on loading."""
        for name, reason in field_problems(self):
            if name == "redis_url" and self.redis_mode == "cluster":
                continue  # a list of seeds, checked below
            several = name == "redis_url" and "," in self.redis_url and redis_seeds_problem(self.redis_url) is None
            yield name, (_SEVERAL_URLS if several else reason), ()
        if self.redis_mode == "cluster" and (problem := redis_seeds_problem(self.redis_url)):
            yield "redis_url", problem, ()
        if (self.redis_mode == "cluster" or self.shard_count > 1) and ("{" in self.stream or "}" in self.stream):
            # shard keys are <stream>:{<tag>}, and Redis hashes the first {...} of a key
            yield "stream", f"must not contain {{ or }} with shard streams (hash tags), got {show(self.stream)}", ()
        if self.retry_cap_s < self.retry_base_s:
            yield ("retry_cap_s", f"retry_cap_s {self.retry_cap_s} must be at least retry_base_s {self.retry_base_s}",
                   ("retry_base_s",))

    @property
    def shard_count(self) -> int:
        """Shard streams: ``shards``, else the mode's default (:data:`DEFAULT_SHARDS`)."""
        return self.shards if self.shards is not None else DEFAULT_SHARDS[self.redis_mode]

    @property
    def redis_seeds(self) -> tuple[str, ...]:
        """The Redis URLs to start from: the one server, or every seed node of a cluster."""
        return tuple(self.redis_url.split(",")) if self.redis_mode == "cluster" else (self.redis_url,)

    @property
    def backend_address(self) -> str:
        """``host:port`` of the configured backend without credentials (every seed of a cluster, a socket's
        path, ``memory``), for messages and ``/readyz``."""
        if self.backend == "memory":
            return "memory"
        urls = self.redis_seeds if self.backend == "redis" else (self.amqp_url,)
        return ",".join(map(server_address, urls))

    # -- building blocks ---------------------------------------------------------------------------------
    def queue_settings(self, groups: Sequence[str] | None = None) -> QueueSettings:
        """The queue part of the settings, declaring ``groups`` (default: the configured group)."""
        options = {spec.name: getattr(self, spec.name) for spec in fields(QueueOptions)}
        return QueueSettings(**options, groups=(self.group,) if groups is None else tuple(groups))

    def open_queue(self, groups: Sequence[str] | None = None) -> FrameQueue:
        """Open the queue these settings describe, declaring ``groups`` (default: the configured group)."""
        return open_queue(self.backend, redis_url=self.redis_url, amqp_url=self.amqp_url,
                          settings=self.queue_settings(groups), codec=self.codec(), redis_options=self.redis_options())

    def redis_options(self) -> RedisOptions:
        """The ``redis`` backend's layout and durability these settings describe."""
        return RedisOptions(self.redis_mode, self.shard_count, self.redis_replica_acks,
                            self.redis_replica_timeout_ms)

    def codec(self) -> FrameCodec:
        """The wire codec these settings describe."""
        return FrameCodec(compress=self.compress, checksum=self.checksum, max_frame_bytes=self.max_frame_bytes)

    def wake_latency_request(self, device: Path = DEVICE) -> WakeLatencyRequest | None:
        """The CPU wake-up latency request these settings ask for, held until closed; None when unset."""
        if self.cpu_wake_latency_us is None:
            return None
        try:
            return WakeLatencyRequest(self.cpu_wake_latency_us, device)
        except WakeLatencyUnavailable as exc:
            raise ConfigError(f"{_env('cpu_wake_latency_us')}: {exc}") from exc

    def environment(self) -> dict[str, str]:
        """Every setting as its ``FRAME_BUFFER_*`` variable, read back by :meth:`load` as the same settings
        (a worker process gets its settings this way, whatever file and flags gave them to the parent)."""
        return {_env(spec.name): _text(getattr(self, spec.name)) for spec in fields(self)}

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (``None`` values are ignored), validated again."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # -- loading -----------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Settings:
        """Defaults, then the YAML file (keys are field names), then ``FRAME_BUFFER_*`` variables, then
        ``overrides`` (command-line flags; ``None`` values are ignored).

        A wrong value is reported under the name the user gave it: ``fb.yml: workers``, ``FRAME_BUFFER_WORKERS``
        or the flag (``labels[name]``, by default ``--<name>``). An unknown ``FRAME_BUFFER_*`` variable is
        refused, with the closest setting's name: a misspelt setting must not be ignored without a word.
        """
        environ = os.environ if environ is None else environ
        known = get_type_hints(cls)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        _refuse_unknown_variables(environ, {_env(name) for name in known})
        path = config_file if config_file is not None else environ.get(CONFIG_ENV)
        if path is not None:
            for key, value in _read_yaml(str(path), known).items():
                sources[key] = f"{path}: {key}"
                values[key] = _convert(known[key], value, sources[key])
        for name, hint in known.items():
            raw = environ.get(_env(name))
            if raw is not None:
                sources[name] = _env(name)
                values[name] = _convert(hint, raw, sources[name])
        for name, value in (overrides or {}).items():
            if value is not None:
                sources[name] = (labels or {}).get(name) or f"--{name.replace('_', '-')}"
                values[name] = value
        try:
            return cls(**values)
        except SettingError as exc:
            named = next((n for n in (exc.setting, *exc.related) if n in sources), exc.setting)
            raise SettingError(exc.setting, exc.reason, sources.get(named, _env(named))) from None


def _env(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def _text(value: object) -> str:
    """A setting's value as its variable holds it (``None`` as empty: unset)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return repr(value) if isinstance(value, float) else str(value)


def _suggest(word: str, candidates: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean X?)`` for the closest candidate, compared without their common ``prefix``."""
    names = {name.removeprefix(prefix): name for name in candidates}
    match = difflib.get_close_matches(word.removeprefix(prefix), list(names), n=1, cutoff=0.6)
    return f" (did you mean {names[match[0]]}?)" if match else ""


def _refuse_unknown_variables(environ: Mapping[str, str], known: set[str]) -> None:
    for variable in sorted(environ):
        if variable.startswith(ENV_PREFIX) and variable not in known and variable != CONFIG_ENV:
            raise ConfigError(f"{variable}: no such setting{_suggest(variable, known | {CONFIG_ENV}, ENV_PREFIX)}; "
                              f"FRAME_BUFFER_* variables are settings (README, Configuration)")


def _read_yaml(path: str, known: Mapping[str, Any]) -> dict[str, Any]:
    """The YAML file's mapping; every way it can be wrong is one line naming the file."""
    if not path:
        raise ConfigError("config file: the name is empty")
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start})") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}: not valid YAML: {where}{problem}") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: not valid YAML: nested too deeply") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: must be a mapping of setting names to values, "
                          f"got a {type(loaded).__name__}")
    for key in loaded:
        if key not in known:
            raise ConfigError(f"config file {path}: unknown setting {show(key)}{_suggest(str(key), known)}")
    return loaded


def _convert(hint: Any, value: Any, source: str) -> Any:
    """``value`` (a string from the environment, or what YAML made of the file) as the field's type ``hint``.

    YAML gives typed values: a float or a boolean where an integer belongs is refused, not rounded
    (``max_lag: 5.5``), and a list or a mapping where text belongs is refused, not printed into it. A choice
    (``Literal``) is converted as text; whether it is one of the choices is the settings' own check.
    """
    kind, optional = unwrap(hint)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))):
        return None
    if get_origin(kind) is Literal:
        kind = str
    elif get_origin(kind) is tuple and get_args(kind) == (str, ...):
        kind = tuple
    if kind not in _EXPECTED:
        raise TypeError(f"{source}: no conversion for a setting of type {hint}")
    wrong = ConfigError(f"{source}: must be {_EXPECTED[kind]}, got {show(value)}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise wrong
        try:
            return int(value)
        except ValueError:
            raise wrong from None
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise wrong
        try:
            number = float(value)
        except ValueError:
            raise wrong from None
        if not math.isfinite(number):
            raise ConfigError(f"{source}: must be a finite number, got {show(value)}")
        return number
    if kind is bool:
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower() if isinstance(value, str | int) else ""
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise wrong
    if kind is tuple:
        items = value if isinstance(value, list) else [value] if isinstance(value, str) else None
        if items is None or not all(isinstance(item, str) for item in items):
            raise wrong
        return tuple(part.strip() for item in items for part in item.split(",") if part.strip())
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise wrong
    return str(value)


#: How a message names each type a setting can have (``tuple``: a ``tuple[str, ...]``).
_EXPECTED: dict[Any, str] = {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string",
                             tuple: "a list of strings"}
