"""One settings object for every command, from ``FRAME_BUFFER_*`` environment variables and an optional YAML file.

Precedence: defaults < YAML file < environment < command-line flags. A wrong value stops the start with the
field named (``ConfigError: FRAME_BUFFER_HTTP_PORT: must be an integer, got 'abc'``).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import socket
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from frame_buffer.codec import FrameCodec
from frame_buffer.errors import ConfigError
from frame_buffer.queue import QueueSettings
from frame_buffer.wake_latency import DEVICE, NO_BOUND_US, WakeLatencyRequest, WakeLatencyUnavailable

ENV_PREFIX = "FRAME_BUFFER_"
#: The one FRAME_BUFFER_* variable that is not a setting: the YAML file to read.
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
_DAY_S = 86_400.0
#: Largest frame a setting may allow: Redis refuses a bulk string over 512 MiB (proto-max-bulk-len).
MAX_FRAME_BYTES_LIMIT = 512 * 1024 * 1024

__all__ = [
    "CONFIG_ENV", "ENV_PREFIX", "RANGES", "Bound", "ConfigError", "SettingError", "Settings", "amqp_url_problem",
    "name_problem", "redis_url_problem", "show",
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


@dataclass(frozen=True)
class Bound:
    """Inclusive range of a numeric setting (``low_open``: the low end itself is refused)."""

    low: float
    high: float
    low_open: bool = False
    says: str | None = None  # the message instead of the generic one

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range, or None."""
        outside = value < self.low or (self.low_open and value == self.low) or value > self.high
        if outside and self.says:
            return f"{self.says}, got {value}"
        if value < self.low or (self.low_open and value == self.low):
            if (self.low, self.low_open) in ((0, True), (1, False)):
                return f"must be positive, got {value}"
            if self.low == 0:
                return f"must not be negative, got {value}"
            return f"must be at least {_num(self.low)}, got {value}"
        if value > self.high:
            return f"must be at most {_num(self.high)}, got {value}"
        return None


#: The range of every numeric setting (the README's Configuration table says the same).
RANGES: dict[str, Bound] = {
    "workers": Bound(1, 1024),
    "http_port": Bound(0, 65535, says="must be a port number (0 to 65535; 0 picks a free one)"),
    "max_lag": Bound(1, 1_000_000_000),
    "publish_timeout_s": Bound(0, _DAY_S),
    "claim_min_idle_ms": Bound(1, _DAY_S * 1000),
    "max_deliveries": Bound(1, 1000),
    "buffer_budget_bytes": Bound(1, 2**40),
    "retry_base_s": Bound(0, 3600),
    "retry_cap_s": Bound(0, 3600),
    "drain_timeout_s": Bound(0, _DAY_S, low_open=True),
    "stall_timeout_s": Bound(0, _DAY_S, low_open=True),
    "max_frame_bytes": Bound(1, MAX_FRAME_BYTES_LIMIT),
    "cpu_wake_latency_us": Bound(0, NO_BOUND_US, says=f"must be 0 to {NO_BOUND_US} (microseconds)"),
}


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
        for name, reason, related in self._problems():
            raise SettingError(name, reason, related=related)

    def _problems(self) -> Iterator[tuple[str, str, tuple[str, ...]]]:
        """Every value that is wrong, as (setting, reason, related settings); types were checked on loading."""
        choices = {
            "backend": ("redis", "rabbitmq", "memory"),
            "policy": ("block", "drop_oldest", "drop_newest"),
            "checksum": ("xxh3", "none"),
            "log_format": ("text", "json"),
            "log_level": ("DEBUG", "INFO", "WARNING", "ERROR"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                yield name, f"must be one of {', '.join(allowed)}, got {show(getattr(self, name))}", ()
        for name, bound in RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):
                yield name, f"must be a finite number, got {value}", ()
            elif problem := bound.problem(value):
                yield name, problem, ()
        if self.retry_cap_s < self.retry_base_s:
            yield ("retry_cap_s", f"retry_cap_s {self.retry_cap_s} must be at least retry_base_s {self.retry_base_s}",
                   ("retry_base_s",))
        for name in ("stream", "group", "consumer_prefix"):
            if problem := name_problem(getattr(self, name)):
                yield name, problem, ()
        if problem := redis_url_problem(self.redis_url):
            yield "redis_url", problem, ()
        if problem := amqp_url_problem(self.amqp_url):
            yield "amqp_url", problem, ()
        if problem := _host_problem(self.http_host):
            yield "http_host", problem, ()
        if not _HANDLER.fullmatch(self.handler):
            yield "handler", f"must be module:function, got {show(self.handler)}", ()
        for spec in self.sources:
            if any(not ch.isprintable() for ch in spec):
                yield "sources", f"must be printable text, got {show(spec)}", ()

    # -- building blocks ---------------------------------------------------------------------------------
    def queue_settings(self, groups: Sequence[str] | None = None) -> QueueSettings:
        """The queue part of the settings, declaring ``groups`` (default: the configured group)."""
        return QueueSettings(
            stream=self.stream, groups=(self.group,) if groups is None else tuple(groups), max_lag=self.max_lag,
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
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        _refuse_unknown_variables(environ, {_env(name) for name in known})
        path = config_file if config_file is not None else environ.get(CONFIG_ENV)
        if path is not None:
            for key, value in _read_yaml(str(path), known).items():
                sources[key] = f"{path}: {key}"
                values[key] = _convert(known[key].type, value, sources[key])
        for name, spec in known.items():
            raw = environ.get(_env(name))
            if raw is not None:
                sources[name] = _env(name)
                values[name] = _convert(spec.type, raw, sources[name])
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


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def show(value: object, limit: int = 60) -> str:
    """``repr`` of a value for a message, cut short: a message is one line of reasonable length."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...' ({len(str(value))} characters)"


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


def _convert(annotation: Any, value: Any, source: str) -> Any:
    """``value`` (a string from the environment, or what YAML made of the file) as the field's type.

    YAML gives typed values: a float or a boolean where an integer belongs is refused, not rounded
    (``max_lag: 5.5``), and a list or a mapping where text belongs is refused, not printed into it.
    """
    kind = str(annotation)
    if kind == "int | None":
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        kind = "int"
    expected = {"int": "an integer", "float": "a number", "bool": "a boolean (true/false)",
                "str": "a string", "tuple[str, ...]": "a list of strings"}.get(kind, kind)
    wrong = ConfigError(f"{source}: must be {expected}, got {show(value)}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise wrong
        try:
            return int(value)
        except ValueError:
            raise wrong from None
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise wrong
        try:
            number = float(value)
        except ValueError:
            raise wrong from None
        if not math.isfinite(number):
            raise ConfigError(f"{source}: must be a finite number, got {show(value)}")
        return number
    if kind == "bool":
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower() if isinstance(value, str | int) else ""
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise wrong
    if kind.startswith("tuple"):
        items = value if isinstance(value, list) else [value] if isinstance(value, str) else None
        if items is None or not all(isinstance(item, str) for item in items):
            raise wrong
        return tuple(part.strip() for item in items for part in item.split(",") if part.strip())
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise wrong
    return str(value)


_HANDLER = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
#: RabbitMQ names are at most 255 bytes, and the backend adds ``.<group>.retry.<ms>`` to the stream's.
_MAX_NAME_BYTES = 200
#: Host names as resolvers take them; ``_`` too, because Docker resolves container names such as ``redis_1``.
_HOSTNAME = re.compile(r"(?!-)[\w-]{1,63}(?<!-)(\.(?!-)[\w-]{1,63}(?<!-))*\.?", re.ASCII)


def name_problem(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if len(name.encode()) > _MAX_NAME_BYTES:
        return f"must be at most {_MAX_NAME_BYTES} bytes, got {len(name.encode())}"
    if any(not ch.isprintable() or ch.isspace() for ch in name):
        return f"must not contain spaces or control characters, got {show(name)}"
    return None


def _host_problem(host: str) -> str | None:
    """A host must be an IP address or a host name (``999.1.1.1`` is neither)."""
    if not host:
        return "must not be empty"
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(candidate)
        return None
    except ValueError:
        pass
    if ":" in candidate or re.fullmatch(r"[\d.]+", candidate) or len(candidate) > 253 \
            or not _HOSTNAME.fullmatch(candidate):
        return f"must be an IP address or a host name, got {show(host)}"
    return None


def _without_password(url: str) -> str:
    """The URL as it may appear in a message: a password is shown as ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hostpart}"


def _server_url_problem(url: str, schemes: tuple[str, ...]) -> tuple[str | None, urllib.parse.SplitResult | None]:
    """Scheme, host and port of a server URL; the parsed URL when they are right."""
    shown = show(_without_password(url))
    if not url:
        return "must not be empty", None
    if any(not ch.isprintable() or ch.isspace() for ch in url):
        return f"must not contain spaces or control characters: {shown}", None
    parts = urllib.parse.urlsplit(url)
    if f"{parts.scheme}://" not in schemes or not url.startswith(f"{parts.scheme}://"):
        return f"must start with {', '.join(schemes[:-1])} or {schemes[-1]}, got {shown}", None
    if parts.scheme == "unix":
        return (None, parts) if parts.path else (f"a unix:// URL needs a socket path: {shown}", None)
    try:
        port = parts.port
    except ValueError:
        raw = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        if raw.isascii() and raw.isdigit():
            return f"port must be 1 to 65535, got {raw} in {shown}", None
        return f"port must be an integer 1 to 65535, got {show(raw)} in {shown}", None
    if port is not None and not 1 <= port <= 65535:
        return f"port must be 1 to 65535, got {port} in {shown}", None
    if not parts.hostname:
        return f"needs a host: {shown}", None
    if problem := _host_problem(parts.hostname):
        return f"host {problem} in {shown}", None
    return None, parts


def redis_url_problem(url: str) -> str | None:
    problem, parts = _server_url_problem(url, ("redis://", "rediss://", "unix://"))
    if parts is None or parts.scheme == "unix":
        return problem
    db = parts.path.strip("/")
    if db and not (db.isascii() and db.isdigit()):
        return f"the database after the port must be an integer, got {show(db)} in {show(_without_password(url))}"
    return None


def amqp_url_problem(url: str) -> str | None:
    return _server_url_problem(url, ("amqp://", "amqps://"))[0]
