"""What a setting's value must be, declared once in its annotation and checked from there.

A settings dataclass writes each field's rule into its type: ``Annotated[int, Bound(1, 1000)]`` for a range,
``Annotated[str, NAME]`` for a rule, ``Literal["a", "b"]`` for a choice. :func:`field_problems` reads them
(``typing.get_type_hints``), so a field, its default and its check are one line, and the queue's settings
and the service's settings share the same checks. Only the standard library here: every layer may use it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import types
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, Union, get_args, get_origin, get_type_hints

#: Longest a timeout setting may be.
DAY_S = 86_400.0

__all__ = [
    "AMQP_URL", "DAY_S", "HANDLER", "HOST", "NAME", "PRINTABLE_ITEMS", "REDIS_URL", "Bound", "Check", "Rule",
    "amqp_url_problem", "choices_of", "field_problems", "host_problem", "name_problem", "redis_seeds_problem",
    "redis_url_problem", "show", "unwrap",
]


def show(value: object, limit: int = 60) -> str:
    """``repr`` of a value for a message, cut short: a message is one line of reasonable length."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...' ({len(str(value))} characters)"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class Check(Protocol):
    """A rule in a field's ``Annotated`` metadata."""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is wrong, or None."""


@dataclass(frozen=True)
class Bound:
    """Inclusive range of a numeric setting (``low_open``: the low end itself is refused)."""

    low: float
    high: float
    low_open: bool = False
    says: str | None = None  # the message instead of the generic one

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range (or not finite), or None."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
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


@dataclass(frozen=True)
class Rule:
    """A check written as a function (``problem`` returns the reason, or None)."""

    problem: Callable[[Any], str | None]


# -- the field rules the settings use --------------------------------------------------------------------
_HANDLER = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
#: RabbitMQ names are at most 255 bytes, and the backend adds ``.<group>.retry.<ms>`` to the stream's.
_MAX_NAME_BYTES = 200
#: Host names as resolvers take them; ``_`` too, because Docker resolves container names such as ``redis_1``.
_HOSTNAME = re.compile(r"(?!-)[\w-]{1,63}(?<!-)(\.(?!-)[\w-]{1,63}(?<!-))*\.?", re.ASCII)


def name_problem(name: str) -> str | None:
    """A stream, group or consumer name: not empty, not too long, no spaces or control characters."""
    if not name:
        return "must not be empty"
    if len(name.encode()) > _MAX_NAME_BYTES:
        return f"must be at most {_MAX_NAME_BYTES} bytes, got {len(name.encode())}"
    if any(not ch.isprintable() or ch.isspace() for ch in name):
        return f"must not contain spaces or control characters, got {show(name)}"
    return None


def host_problem(host: str) -> str | None:
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


def server_address(url: str) -> str:
    """``host:port`` (IPv6 in brackets) or the socket path of a server URL, without credentials: where a
    message says a server is."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    default = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671}.get(parts.scheme, 0)
    try:
        port = parts.port or default
    except ValueError:  # a URL given in code, without the check: the default port
        port = default
    host = parts.hostname or "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def masked_url(url: str) -> str:
    """``url`` with its password shown as ``***``: fit for a message, a log line or /readyz.

    Works on the text, not on ``urlsplit``, so that a URL too malformed to parse is still masked. The
    credentials are taken to end at the last ``@``: a password holding an unencoded ``/``, ``?``, ``#`` or
    ``@`` is hidden whole, at the price of also hiding the host of a URL whose path holds an ``@``.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def _server_url_problem(url: str, schemes: tuple[str, ...]) -> tuple[str | None, urllib.parse.SplitResult | None]:
    """Scheme, host and port of a server URL; the parsed URL when they are right."""
    shown = show(masked_url(url))
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
    if problem := host_problem(parts.hostname):
        return f"host {problem} in {shown}", None
    return None, parts


def redis_url_problem(url: str) -> str | None:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL with a sound host, port and database number."""
    problem, parts = _server_url_problem(url, ("redis://", "rediss://", "unix://"))
    if parts is None or parts.scheme == "unix":
        return problem
    db = parts.path.strip("/")
    if db and not (db.isascii() and db.isdigit()):
        return f"the database after the port must be an integer, got {show(db)} in {show(masked_url(url))}"
    return None


def redis_seeds_problem(text: str) -> str | None:
    """Seed nodes of a Redis Cluster: comma-separated ``redis://`` or ``rediss://`` URLs (one is enough), each
    sound, database 0 (a cluster has no other), and all with the same scheme, user and password (one client
    reaches every node the same way)."""
    if not text:
        return "must not be empty"
    seeds = text.split(",")
    first: tuple[str, str | None, str | None] | None = None
    for number, seed in enumerate(seeds, 1):
        where = f"seed {number} of {len(seeds)}: " if len(seeds) > 1 else ""
        if not seed:
            return f"{where}empty (a stray comma?) in {show(masked_url(text))}"
        if seed.startswith("unix://"):
            return f"{where}a cluster is reached over TCP (redis:// or rediss://), got {show(masked_url(seed))}"
        if problem := redis_url_problem(seed):
            return f"{where}{problem}"
        parts = urllib.parse.urlsplit(seed)
        if parts.path.strip("/") not in ("", "0"):
            return (f"{where}a cluster has database 0 only, got {show(parts.path.strip('/'))} in "
                    f"{show(masked_url(seed))}")
        auth = (parts.scheme, parts.username, parts.password)
        if first is None:
            first = auth
        elif auth != first:
            return f"{where}another scheme, user or password than seed 1: every seed must reach the cluster alike"
    return None


def amqp_url_problem(url: str) -> str | None:
    """An ``amqp://`` or ``amqps://`` URL with a sound host and port."""
    return _server_url_problem(url, ("amqp://", "amqps://"))[0]


def _handler_problem(handler: str) -> str | None:
    return None if _HANDLER.fullmatch(handler) else f"must be module:function, got {show(handler)}"


def _printable_items_problem(items: tuple[str, ...]) -> str | None:
    bad = next((item for item in items if any(not ch.isprintable() for ch in item)), None)
    return None if bad is None else f"must be printable text, got {show(bad)}"


NAME = Rule(name_problem)
HOST = Rule(host_problem)
REDIS_URL = Rule(redis_url_problem)
AMQP_URL = Rule(amqp_url_problem)
HANDLER = Rule(_handler_problem)
PRINTABLE_ITEMS = Rule(_printable_items_problem)


# -- reading the rules from the annotations --------------------------------------------------------------
def unwrap(hint: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of a field's type hint: ``int | None`` is ``(int, True)``."""
    if get_origin(hint) in (Union, types.UnionType):
        kept = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(kept) != 1:
            raise TypeError(f"a setting has one type (or that type | None), not {hint}")
        return kept[0], len(kept) < len(get_args(hint))
    return hint, False


def choices_of(hint: Any) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` type (also inside ``| None``), else None."""
    base, _ = unwrap(hint)
    return tuple(get_args(base)) if get_origin(base) is Literal else None


_Rules = tuple[tuple[str, tuple[str, ...] | None, tuple[Check, ...]], ...]
_RULES: dict[type, _Rules] = {}


def _rules(cls: type) -> _Rules:
    """Per field of the dataclass ``cls``: its name, its choices (a ``Literal``) and its checks (read once)."""
    if cls not in _RULES:
        hints = get_type_hints(cls, include_extras=True)
        rules = []
        for spec in dataclasses.fields(cls):
            hint = hints[spec.name]
            checks: tuple[Check, ...] = ()
            if get_origin(hint) is Annotated:
                hint, *metadata = get_args(hint)
                checks = tuple(item for item in metadata if isinstance(item, Bound | Rule))
            rules.append((spec.name, choices_of(hint), checks))
        _RULES[cls] = tuple(rules)
    return _RULES[cls]


def field_problems(instance: object) -> Iterator[tuple[str, str]]:
    """Every field of a settings dataclass whose value breaks its annotation, as (field, reason).

    ``None`` passes (an unset optional setting); types themselves are the loader's business.
    """
    for name, choices, checks in _rules(type(instance)):
        value = getattr(instance, name)
        if value is None:
            continue
        if choices is not None and value not in choices:
            yield name, f"must be one of {', '.join(choices)}, got {show(value)}"
            continue
        for check in checks:
            if problem := check.problem(value):
                yield name, problem
                break
