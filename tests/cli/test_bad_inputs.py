"""Every bad input of issue 13 (items 4, 5 and 11) and more, as a user types them: a real ``frame-buffer``
process against the real local Redis. Each must end with exactly one line on stderr that names the culprit,
the documented exit code (README, "Exit codes"), and no traceback.

A usage error is argparse's, made one line by ``cli.Parser.error``; every other error is the top-level
handler's ``frame-buffer: ...`` line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.cli.test_commands import FRAME_BUFFER
from tests.conftest import REDIS_URL


@dataclass(frozen=True)
class Place:
    """What a row's ``{placeholders}`` stand for: a unique stream, files, a key holding a string, a busy port."""

    stream: str
    tmp: Path
    string_key: str
    busy_port: int


USAGE, CONFIG, FAILED, UNREACHABLE = 2, 2, 1, 3

#: (argv, extra environment, exit code, text the one stderr line must contain). ``{...}`` is filled from Place.
ROWS: list[tuple[str, tuple[str, ...], dict[str, str], int, str]] = [
    # -- issue 13, item 4: tracebacks where one line was expected ------------------------------------------
    ("loadgen-cameras-0", ("loadgen", "--cameras", "0"), {}, USAGE, "argument --cameras: must be positive, got 0"),
    ("loadgen-batch-0", ("loadgen", "--batch", "0"), {}, USAGE, "argument --batch: must be positive, got 0"),
    ("consume-batch-0", ("consume", "--batch", "0"), {}, USAGE, "argument --batch: must be positive, got 0"),
    ("loadgen-size-huge", ("loadgen", "--size", "100000x100000"), {}, USAGE,
     "argument --size: each side must be 1 to 16384 pixels, got '100000x100000'"),
    ("loadgen-size-over-max-frame-bytes", ("loadgen", "--size", "8000x8000", "--stream", "{stream}"), {}, CONFIG,
     "--size: a 8000x8000 RGB frame is 192000000 bytes, over max_frame_bytes 33554432"),
    ("loadgen-frame-too-large", ("loadgen", "--size", "64x48", "--stream", "{stream}"),
     {"FRAME_BUFFER_MAX_FRAME_BYTES": "1000"}, CONFIG, "over max_frame_bytes 1000 (FRAME_BUFFER_MAX_FRAME_BYTES)"),
    ("loadgen-over-budget", ("loadgen", "--size", "64x48", "--stream", "{stream}"),
     {"FRAME_BUFFER_BUFFER_BUDGET_BYTES": "1000"}, CONFIG,
     "can never fit buffer_budget_bytes 1000 (FRAME_BUFFER_BUFFER_BUDGET_BYTES)"),
    ("demo-frame-too-large", ("demo", "--backend", "memory", "--size", "64x48"),
     {"FRAME_BUFFER_MAX_FRAME_BYTES": "1000"}, CONFIG, "over max_frame_bytes 1000"),
    ("demo-over-budget", ("demo", "--backend", "memory", "--size", "64x48"),
     {"FRAME_BUFFER_BUFFER_BUDGET_BYTES": "1000"}, CONFIG, "can never fit buffer_budget_bytes 1000"),
    ("redis-url-port-not-a-number", ("loadgen", "--redis-url", "redis://127.0.0.1:notaport/0"), {}, CONFIG,
     "--redis-url: port must be an integer 1 to 65535, got 'notaport'"),
    ("env-redis-url-port-not-a-number", ("consume",), {"FRAME_BUFFER_REDIS_URL": "redis://127.0.0.1:notaport/0"},
     CONFIG, "FRAME_BUFFER_REDIS_URL: port must be an integer 1 to 65535"),
    ("dlq-replay-not-an-id", ("dlq", "replay", "not-an-id", "--stream", "{stream}"), {}, FAILED,
     "1 of 1 id(s) not found in {stream}:dlq"),
    ("consume-wrongtype", ("consume", "--stream", "{string_key}", "--idle-exit", "0"), {}, CONFIG, "{string_key}"),
    ("dlq-list-wrongtype", ("dlq", "list", "--stream", "{string_key}"), {}, CONFIG, "{string_key}"),
    ("run-wrongtype", ("run", "--no-sources", "--http-port", "0", "--stream", "{string_key}"), {}, CONFIG,
     "{string_key}"),
    ("run-http-port-in-use", ("run", "--no-sources", "--http-port", "{busy_port}", "--stream", "{stream}"),
     {"FRAME_BUFFER_HTTP_HOST": "127.0.0.1"}, CONFIG, "{busy_port}"),
    ("run-status-fd-not-open", ("run", "--no-sources", "--http-port", "0", "--stream", "{stream}", "--status-fd",
                                "987"), {}, CONFIG, "--status-fd 987: Bad file descriptor"),
    ("run-http-host-invalid", ("run", "--no-sources", "--stream", "{stream}"),
     {"FRAME_BUFFER_HTTP_HOST": "999.1.1.1"}, CONFIG,
     "FRAME_BUFFER_HTTP_HOST: must be an IP address or a host name, got '999.1.1.1'"),
    ("env-publish-timeout-negative", ("loadgen",), {"FRAME_BUFFER_PUBLISH_TIMEOUT_S": "-1"}, CONFIG,
     "FRAME_BUFFER_PUBLISH_TIMEOUT_S: must not be negative, got -1.0"),
    ("env-retry-cap-negative", ("consume",), {"FRAME_BUFFER_RETRY_CAP_S": "-1"}, CONFIG,
     "FRAME_BUFFER_RETRY_CAP_S: must not be negative"),
    # -- item 5: accepted, should be refused ---------------------------------------------------------------
    ("loadgen-fps-negative", ("loadgen", "--fps", "-5"), {}, USAGE, "argument --fps: must not be negative, got -5.0"),
    ("env-retry-base-negative", ("loadgen",), {"FRAME_BUFFER_RETRY_BASE_S": "-1"}, CONFIG,
     "FRAME_BUFFER_RETRY_BASE_S: must not be negative"),
    ("yaml-int-given-a-float", ("loadgen", "--config", "{tmp}/float.yml"), {}, CONFIG,
     "float.yml: max_lag: must be an integer, got 5.5"),
    ("env-unknown-variable", ("loadgen",), {"FRAME_BUFFER_MAX_LAGG": "5"}, CONFIG,
     "FRAME_BUFFER_MAX_LAGG: no such setting (did you mean FRAME_BUFFER_MAX_LAG?)"),
    ("source-unknown-option", ("run", "--source", "synthetic:cam0:bogus=1", "--http-port", "0",
                               "--stream", "{stream}"), {}, CONFIG, "bogus"),
    # -- item 11 -----------------------------------------------------------------------------------------
    ("dlq-purge-missing-id", ("dlq", "purge", "1-1", "--yes", "--stream", "{stream}"), {}, FAILED,
     "1 of 1 id(s) not found in {stream}:dlq"),
    ("dlq-show-missing-id", ("dlq", "show", "1-1", "--stream", "{stream}"), {}, FAILED,
     "no dead letter 1-1 in {stream}:dlq"),
    ("yaml-range-names-file-and-key", ("consume", "--config", "{tmp}/negative.yml"), {}, CONFIG,
     "negative.yml: workers: must be positive, got -1"),
    # -- issue 3: source options, checked at start (the service's part) -------------------------------------
    ("source-fps-not-a-number", ("run", "--source", "synthetic:cam0:fps=abc", "--http-port", "0",
                                 "--stream", "{stream}"), {}, CONFIG, "fps"),
    ("source-size-12by5", ("run", "--source", "synthetic:cam0:size=12by5", "--http-port", "0",
                           "--stream", "{stream}"), {}, CONFIG, "12by5"),
    ("source-fps-negative", ("run", "--source", "synthetic:cam0:fps=-5", "--http-port", "0",
                             "--stream", "{stream}"), {}, CONFIG, "fps"),
    ("source-file-without-path", ("run", "--source", "file:cam1", "--http-port", "0", "--stream", "{stream}"),
     {}, CONFIG, "cam1"),
    ("source-file-missing", ("run", "--source", "file:cam1:path={tmp}/missing.mp4", "--http-port", "0",
                             "--stream", "{stream}"), {}, CONFIG, "missing.mp4"),
    ("source-rtsp-without-url", ("run", "--source", "rtsp:cam2", "--http-port", "0", "--stream", "{stream}"),
     {}, CONFIG, "cam2"),
    # -- our own: numbers ---------------------------------------------------------------------------------
    ("loadgen-fps-nan", ("loadgen", "--fps", "nan"), {}, USAGE, "argument --fps: must be a finite number, got 'nan'"),
    ("loadgen-fps-inf", ("loadgen", "--fps", "inf"), {}, USAGE, "argument --fps: must be a finite number"),
    ("loadgen-fps-1e400", ("loadgen", "--fps", "1e400"), {}, USAGE, "argument --fps: must be a finite number"),
    ("loadgen-fps-word", ("loadgen", "--fps", "fast"), {}, USAGE, "argument --fps: must be a number, got 'fast'"),
    ("loadgen-fps-empty", ("loadgen", "--fps", ""), {}, USAGE, "argument --fps: must be a number, got ''"),
    ("loadgen-fps-huge", ("loadgen", "--fps", "1e12"), {}, USAGE, "argument --fps: must be at most 1000000"),
    ("loadgen-duration-0", ("loadgen", "--duration", "0"), {}, USAGE, "argument --duration: must be positive"),
    ("loadgen-duration-negative", ("loadgen", "--duration", "-1"), {}, USAGE, "argument --duration: must be positive"),
    ("loadgen-cameras-huge", ("loadgen", "--cameras", "9" * 30), {}, USAGE, "argument --cameras: must be at most"),
    ("loadgen-cameras-5000-digits", ("loadgen", "--cameras", "9" * 5000), {}, USAGE,
     "argument --cameras: must be an integer, got '999"),
    ("loadgen-cameras-float", ("loadgen", "--cameras", "1.5"), {}, USAGE,
     "argument --cameras: must be an integer, got '1.5'"),
    ("loadgen-size-12by5", ("loadgen", "--size", "12by5"), {}, USAGE,
     "argument --size: must be WIDTHxHEIGHT such as 640x480, got '12by5'"),
    ("loadgen-size-0x0", ("loadgen", "--size", "0x0"), {}, USAGE, "argument --size: each side must be 1 to 16384"),
    ("loadgen-size-negative", ("loadgen", "--size=-640x480"), {}, USAGE, "argument --size: must be WIDTHxHEIGHT"),
    # Fullwidth digits: Python's int() takes them, a frame size does not.
    ("loadgen-size-fullwidth-digits", ("loadgen", "--size", "\uff16\uff14x\uff14\uff18"), {}, USAGE,
     "argument --size: must be WIDTHxHEIGHT"),
    ("consume-max-frames-negative", ("consume", "--max-frames", "-1"), {}, USAGE,
     "argument --max-frames: must not be negative, got -1"),
    ("consume-idle-exit-negative", ("consume", "--idle-exit", "-1"), {}, USAGE,
     "argument --idle-exit: must not be negative"),
    ("consume-idle-exit-nan", ("consume", "--idle-exit", "nan"), {}, USAGE, "argument --idle-exit: must be a finite"),
    ("dlq-list-count-0", ("dlq", "list", "--count", "0"), {}, USAGE, "argument --count: must be positive, got 0"),
    ("dlq-list-count-word", ("dlq", "list", "--count", "all"), {}, USAGE, "argument --count: must be an integer"),
    ("demo-fps-0", ("demo", "--fps", "0"), {}, USAGE, "argument --fps: must be positive"),
    ("demo-cameras-0", ("demo", "--cameras", "0"), {}, USAGE, "argument --cameras: must be positive"),
    ("demo-consumers-0", ("demo", "--consumers", "0"), {}, USAGE, "argument --consumers: must be positive"),
    ("demo-duration-0", ("demo", "--duration", "0"), {}, USAGE, "argument --duration: must be positive"),
    ("demo-size-12by5", ("demo", "--size", "12by5"), {}, USAGE, "argument --size: must be WIDTHxHEIGHT"),
    ("soak-duration-0", ("soak", "--duration", "0"), {}, USAGE, "argument --duration: must be positive"),
    ("soak-fps-0", ("soak", "--fps", "0"), {}, USAGE, "argument --fps: must be positive"),
    ("soak-cameras-0", ("soak", "--cameras", "0"), {}, USAGE, "argument --cameras: must be positive"),
    ("soak-workers-0", ("soak", "--workers", "0"), {}, USAGE, "argument --workers: must be positive"),
    ("soak-interval-0", ("soak", "--interval", "0"), {}, USAGE, "argument --interval: must be positive"),
    ("soak-worker-processes-negative", ("soak", "--worker-processes", "-1"), {}, USAGE,
     "argument --worker-processes: must not be negative"),
    ("soak-role", ("soak", "--duration", "1"), {"FRAME_BUFFER_ROLE": "ingest"}, CONFIG,
     "unset FRAME_BUFFER_ROLE for it"),
    ("soak-size-12by5", ("soak", "--size", "12by5"), {}, USAGE, "argument --size: must be WIDTHxHEIGHT"),
    ("soak-rss-slope-negative", ("soak", "--max-rss-slope-mb-per-h", "-1"), {}, USAGE,
     "argument --max-rss-slope-mb-per-h: must not be negative"),
    ("soak-p99-limit-0", ("soak", "--p99-limit-ms", "0"), {}, USAGE, "argument --p99-limit-ms: must be positive"),
    ("soak-min-rate-2", ("soak", "--min-rate", "2"), {}, USAGE, "argument --min-rate: must be"),
    ("soak-warmup-nan", ("soak", "--warmup", "nan"), {}, USAGE, "argument --warmup: must be a finite number"),
    ("bench-backends-kafka", ("bench", "--backends", "redis,kafka"), {}, USAGE,
     "argument --backends: choose from redis, rabbitmq (comma-separated), got 'kafka'"),
    ("bench-sizes-1KB", ("bench", "--sizes", "1KB"), {}, USAGE, "argument --sizes: choose from 100KB"),
    ("bench-batch-0", ("bench", "--batch", "0"), {}, USAGE, "argument --batch: must be positive"),
    ("bench-rate-0", ("bench", "--rate", "0"), {}, USAGE, "argument --rate: must be positive"),
    ("bench-repeat-0", ("bench", "--repeat", "0"), {}, USAGE, "argument --repeat: must be positive"),
    ("bench-scale-nan", ("bench", "--scale", "nan"), {}, USAGE, "argument --scale: must be a finite number"),
    ("bench-latency-seconds-negative", ("bench", "--latency-seconds", "-1"), {}, USAGE,
     "argument --latency-seconds: must be positive"),
    ("bench-redis-url", ("bench", "--redis-url", "redis://h:notaport/0"), {}, USAGE,
     "argument --redis-url: port must be an integer 1 to 65535"),
    ("bench-amqp-url", ("bench", "--amqp-url", "http://h/"), {}, USAGE, "argument --amqp-url: must start with amqp://"),
    ("bench-wake-latency-negative", ("bench", "--cpu-wake-latency-us", "-1"), {}, USAGE,
     "argument --cpu-wake-latency-us: must not be negative"),
    ("bench-worker-processes-0", ("bench", "--worker-processes", "0"), {}, USAGE,
     "argument --worker-processes: must be positive"),
    ("report-range-0s", ("report", "--bench-json", "{tmp}/float.yml", "--out", "{tmp}/r.png", "--range", "0s"),
     {}, USAGE, "argument --range: must be more than 0s"),
    ("report-range-word", ("report", "--bench-json", "{tmp}/float.yml", "--out", "{tmp}/r.png", "--range", "ten"),
     {}, USAGE, "argument --range: not a duration like 30s, 10m or 1h: 'ten'"),
    ("report-step-negative", ("report", "--prometheus", "http://127.0.0.1:9", "--out", "{tmp}/r.png",
                              "--step=-1s"), {}, USAGE, "argument --step: not a duration"),
    ("report-out-pdf", ("report", "--bench-json", "{tmp}/float.yml", "--out", "{tmp}/r.pdf"), {}, USAGE,
     "--out must end in .png or .html"),
    ("report-out-no-directory", ("report", "--bench-json", "{tmp}/float.yml", "--out", "{tmp}/no/r.png"), {},
     USAGE, "--out: no directory '{tmp}/no' to write r.png into"),
    ("report-prometheus-ftp", ("report", "--prometheus", "ftp://h", "--out", "{tmp}/r.png"), {}, USAGE,
     "argument --prometheus: must be an http:// or https:// URL"),
    ("report-prometheus-port", ("report", "--prometheus", "http://h:notaport", "--out", "{tmp}/r.png"), {}, USAGE,
     "argument --prometheus: the port is not a number"),
    ("report-bench-json-missing", ("report", "--bench-json", "{tmp}/missing.json", "--out", "{tmp}/r.png"), {},
     USAGE, "argument --bench-json: no such file"),
    ("report-end-nan", ("report", "--bench-json", "{tmp}/float.yml", "--out", "{tmp}/r.png", "--end", "nan"), {},
     USAGE, "argument --end: must be a finite number"),
    ("report-no-source", ("report", "--out", "{tmp}/r.png"), {}, USAGE,
     "one of the arguments --prometheus --bench-json is required"),
    ("report-bench-json-not-bench-output", ("report", "--bench-json", "{tmp}/float.yml", "--out", "{tmp}/r.png"),
     {}, FAILED, "no JSON object with 'rows'"),
    ("run-workers-0", ("run", "--workers", "0", "--no-sources"), {}, CONFIG, "--workers: must be positive, got 0"),
    ("run-http-port-70000", ("run", "--http-port", "70000", "--no-sources"), {}, CONFIG,
     "--http-port: must be a port number (0 to 65535"),
    ("run-handler-nocolon", ("run", "--handler", "nocolon", "--no-sources"), {}, CONFIG,
     "--handler: must be module:function, got 'nocolon'"),
    ("run-handler-missing-module", ("run", "--handler", "no_such_module:handle", "--no-sources", "--http-port", "0",
                                    "--stream", "{stream}"), {}, CONFIG, "no_such_module"),
    ("run-wake-latency-negative", ("run", "--cpu-wake-latency-us", "-5", "--no-sources"), {}, CONFIG,
     "--cpu-wake-latency-us: must be 0 to 2000000000 (microseconds), got -5"),
    # -- our own: names, URLs, choices ----------------------------------------------------------------------
    ("stream-empty", ("consume", "--stream", ""), {}, CONFIG, "--stream: must not be empty"),
    ("stream-with-space", ("dlq", "list", "--stream", "frame queue"), {}, CONFIG,
     "--stream: must not contain spaces or control characters"),
    ("stream-too-long", ("loadgen", "--stream", "s" * 300), {}, CONFIG, "--stream: must be at most 200 bytes"),
    ("group-empty", ("consume", "--group", ""), {}, USAGE, "argument --group: must not be empty"),
    ("group-control-character", ("loadgen", "--group", "a\x01b"), {}, USAGE,
     "argument --group: must not contain spaces or control characters"),
    ("group-and-no-group", ("loadgen", "--group", "g", "--no-group"), {}, USAGE,
     "argument --no-group: not allowed with argument --group"),
    ("consumer-unicode-too-long", ("consume", "--consumer", "ü" * 101), {}, USAGE,
     "argument --consumer: must be at most 200 bytes, got 202"),
    ("redis-url-empty", ("consume", "--redis-url", ""), {}, CONFIG, "--redis-url: must not be empty"),
    ("redis-url-http", ("consume", "--redis-url", "http://127.0.0.1:6379"), {}, CONFIG,
     "--redis-url: must start with redis://, rediss:// or unix://"),
    ("redis-url-port-0", ("consume", "--redis-url", "redis://127.0.0.1:0/0"), {}, CONFIG,
     "--redis-url: port must be 1 to 65535, got 0"),
    ("redis-url-db-word", ("consume", "--redis-url", "redis://127.0.0.1:6379/zero"), {}, CONFIG,
     "--redis-url: the database after the port must be an integer, got 'zero'"),
    ("redis-url-bad-host", ("consume", "--redis-url", "redis://999.1.1.1:6379/0"), {}, CONFIG,
     "--redis-url: host must be an IP address or a host name, got '999.1.1.1'"),
    ("redis-url-password-hidden", ("consume", "--redis-url", "redis://:s3cret@127.0.0.1:99999/0"), {}, CONFIG,
     "redis://:***@127.0.0.1:99999/0"),
    ("amqp-url-port", ("consume", "--backend", "rabbitmq", "--amqp-url", "amqp://g:g@h:99999/%2F"), {}, CONFIG,
     "--amqp-url: port must be 1 to 65535, got 99999"),
    ("backend-kafka", ("consume", "--backend", "kafka"), {}, USAGE, "argument --backend: invalid choice: 'kafka'"),
    ("no-command", (), {}, USAGE, "the following arguments are required: COMMAND"),
    ("unknown-command", ("fly",), {}, USAGE, "invalid choice: 'fly'"),
    ("unknown-option", ("loadgen", "--frames", "3"), {}, USAGE, "unrecognized arguments: --frames 3"),
    ("dlq-no-action", ("dlq",), {}, USAGE, "the following arguments are required: ACTION"),
    ("dlq-list-after-not-an-id", ("dlq", "list", "--after", "not-an-id", "--stream", "{stream}"), {}, CONFIG,
     "--after: after: 'not-an-id' is not a Redis stream entry id"),
    ("loadgen-wrongtype", ("loadgen", "--stream", "{string_key}", "--duration", "0.5"), {}, CONFIG,
     "key '{string_key}' holds a string, not a stream"),
    ("loadgen-no-group-wrongtype", ("loadgen", "--stream", "{string_key}", "--no-group"), {}, CONFIG,
     "key '{string_key}' holds a string, not a stream"),
    ("demo-wrongtype", ("demo", "--stream", "{string_key}", "--duration", "0.5"), {}, CONFIG,
     "key '{string_key}' holds a string, not a stream"),
    # -- our own: servers that are not there, or refuse us -------------------------------------------------
    ("consume-redis-unreachable", ("consume", "--redis-url", "redis://127.0.0.1:1/0"), {}, 3,
     "redis at 127.0.0.1:1 unavailable"),
    ("dlq-list-rabbitmq-unreachable", ("dlq", "list", "--backend", "rabbitmq", "--amqp-url",
                                       "amqp://guest:guest@127.0.0.1:1/%2F"), {}, 3, "rabbitmq at 127.0.0.1:1"),
    ("demo-rabbitmq-unreachable", ("demo", "--backend", "rabbitmq", "--amqp-url",
                                   "amqp://guest:guest@127.0.0.1:1/%2F"), {}, 3, "rabbitmq at 127.0.0.1:1"),
    ("consume-rabbitmq-wrong-password", ("consume", "--backend", "rabbitmq", "--amqp-url",
                                         "amqp://guest:wrong@127.0.0.1:5672/%2F"), {}, CONFIG,
     "amqp://guest:***@127.0.0.1:5672/%2F"),
    ("dlq-replay-nothing", ("dlq", "replay", "--stream", "{stream}"), {}, USAGE, "give dead-letter ids or --all"),
    # -- our own: settings ---------------------------------------------------------------------------------
    ("env-max-lag-word", ("loadgen",), {"FRAME_BUFFER_MAX_LAG": "lots"}, CONFIG,
     "FRAME_BUFFER_MAX_LAG: must be an integer, got 'lots'"),
    ("env-max-lag-float", ("loadgen",), {"FRAME_BUFFER_MAX_LAG": "5.5"}, CONFIG,
     "FRAME_BUFFER_MAX_LAG: must be an integer, got '5.5'"),
    ("env-max-lag-huge", ("loadgen",), {"FRAME_BUFFER_MAX_LAG": "9" * 25}, CONFIG,
     "FRAME_BUFFER_MAX_LAG: must be at most 1000000000"),
    ("env-workers-empty", ("run",), {"FRAME_BUFFER_WORKERS": ""}, CONFIG,
     "FRAME_BUFFER_WORKERS: must be an integer, got ''"),
    ("env-drain-timeout-0", ("loadgen",), {"FRAME_BUFFER_DRAIN_TIMEOUT_S": "0"}, CONFIG,
     "FRAME_BUFFER_DRAIN_TIMEOUT_S: must be positive"),
    ("env-stall-timeout-nan", ("run",), {"FRAME_BUFFER_STALL_TIMEOUT_S": "nan"}, CONFIG,
     "FRAME_BUFFER_STALL_TIMEOUT_S: must be a finite number"),
    ("env-retry-cap-below-base", ("run",), {"FRAME_BUFFER_RETRY_CAP_S": "0.01"}, CONFIG,
     "FRAME_BUFFER_RETRY_CAP_S: retry_cap_s 0.01 must be at least retry_base_s 0.1"),
    ("env-publish-timeout-inf", ("loadgen",), {"FRAME_BUFFER_PUBLISH_TIMEOUT_S": "inf"}, CONFIG,
     "FRAME_BUFFER_PUBLISH_TIMEOUT_S: must be a finite number"),
    ("env-claim-idle-0", ("consume",), {"FRAME_BUFFER_CLAIM_MIN_IDLE_MS": "0"}, CONFIG,
     "FRAME_BUFFER_CLAIM_MIN_IDLE_MS: must be positive"),
    ("env-max-frame-bytes-1GiB", ("loadgen",), {"FRAME_BUFFER_MAX_FRAME_BYTES": str(2**30)}, CONFIG,
     "FRAME_BUFFER_MAX_FRAME_BYTES: must be at most 536870912"),
    ("env-backend-kafka", ("consume",), {"FRAME_BUFFER_BACKEND": "kafka"}, CONFIG,
     "FRAME_BUFFER_BACKEND: must be one of redis, rabbitmq, memory, got 'kafka'"),
    ("env-log-level", ("loadgen",), {"FRAME_BUFFER_LOG_LEVEL": "LOUD"}, CONFIG,
     "FRAME_BUFFER_LOG_LEVEL: must be one of"),
    ("env-compress-maybe", ("loadgen",), {"FRAME_BUFFER_COMPRESS": "maybe"}, CONFIG,
     "FRAME_BUFFER_COMPRESS: must be a boolean"),
    ("env-amqp-url-redis", ("consume",), {"FRAME_BUFFER_AMQP_URL": "redis://h"}, CONFIG,
     "FRAME_BUFFER_AMQP_URL: must start with amqp:// or amqps://"),
    ("env-unknown-no-suggestion", ("dlq", "list"), {"FRAME_BUFFER_XYZZY": "1"}, CONFIG,
     "FRAME_BUFFER_XYZZY: no such setting;"),
    ("env-old-harness-variable", ("consume",), {"FRAME_BUFFER_REQUIRE_DEPLOY": "1"}, CONFIG,
     "FRAME_BUFFER_REQUIRE_DEPLOY: no such setting"),
    # -- issue 16: Redis Cluster settings (checked now; cluster mode and shards refused until built) ------------
    ("env-redis-mode-sentinel", ("consume",), {"FRAME_BUFFER_REDIS_MODE": "sentinel"}, CONFIG,
     "FRAME_BUFFER_REDIS_MODE: must be one of standalone, cluster, got 'sentinel'"),
    ("env-redis-mode-cluster-on-standalone", ("loadgen", "--stream", "{stream}"),
     {"FRAME_BUFFER_REDIS_MODE": "cluster"}, CONFIG,
     "redis at 127.0.0.1:6379 (redis://127.0.0.1:6379/0) is not a Redis Cluster node"),
    ("run-redis-mode-cluster-on-standalone", ("run", "--no-sources", "--http-port", "0", "--stream", "{stream}"),
     {"FRAME_BUFFER_REDIS_MODE": "cluster"}, CONFIG, "is not a Redis Cluster node: set FRAME_BUFFER_REDIS_MODE"),
    ("demo-redis-mode-cluster-on-standalone", ("demo", "--duration", "0.5"), {"FRAME_BUFFER_REDIS_MODE": "cluster"},
     CONFIG, "is not a Redis Cluster node"),
    ("env-cluster-seeds-unreachable", ("consume", "--stream", "{stream}"),
     {"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "redis://127.0.0.1:1/0,redis://127.0.0.1:2"},
     UNREACHABLE, "redis cluster unavailable, no seed answered: 127.0.0.1:1: Error 111 connecting to 127.0.0.1:1"),
    ("env-shards-0", ("loadgen",), {"FRAME_BUFFER_SHARDS": "0"}, CONFIG,
     "FRAME_BUFFER_SHARDS: must be positive, got 0"),
    ("env-shards-2000", ("dlq", "list"), {"FRAME_BUFFER_SHARDS": "2000"}, CONFIG,
     "FRAME_BUFFER_SHARDS: must be at most 1024, got 2000"),
    ("env-redis-url-seeds-in-standalone", ("consume",),
     {"FRAME_BUFFER_REDIS_URL": "redis://127.0.0.1:7000/0,redis://127.0.0.1:7001/0"}, CONFIG,
     "FRAME_BUFFER_REDIS_URL: several URLs (seed nodes) need redis_mode cluster (FRAME_BUFFER_REDIS_MODE)"),
    ("env-cluster-seed-database", ("consume",),
     {"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "redis://127.0.0.1:7000,redis://127.0.0.1:7001/2"},
     CONFIG, "FRAME_BUFFER_REDIS_URL: seed 2 of 2: a cluster has database 0 only, got '2'"),
    ("env-cluster-seed-passwords-differ", ("loadgen",),
     {"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "redis://:s3cret@127.0.0.1:7000,redis://:other@h:7001"},
     CONFIG, "seed 2 of 2: another scheme, user or password than seed 1"),
    ("env-cluster-seed-unix", ("consume",),
     {"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "unix:///run/redis.sock"}, CONFIG,
     "FRAME_BUFFER_REDIS_URL: a cluster is reached over TCP (redis:// or rediss://)"),
    ("config-missing", ("loadgen", "--config", "{tmp}/missing.yml"), {}, CONFIG,
     "config file {tmp}/missing.yml: No such file or directory"),
    ("config-directory", ("loadgen", "--config", "{tmp}"), {}, CONFIG, "config file {tmp}: Is a directory"),
    ("config-binary", ("loadgen", "--config", "{tmp}/binary.yml"), {}, CONFIG,
     "binary.yml: not UTF-8 text (byte 0x89 at offset 0)"),
    ("config-yaml-list", ("loadgen", "--config", "{tmp}/list.yml"), {}, CONFIG,
     "list.yml: must be a mapping of setting names to values, got a list"),
    ("config-invalid-yaml", ("loadgen", "--config", "{tmp}/invalid.yml"), {}, CONFIG,
     "invalid.yml: not valid YAML: line"),
    ("config-unknown-key", ("loadgen", "--config", "{tmp}/unknown.yml"), {}, CONFIG,
     "unknown.yml: unknown setting 'max_lagg' (did you mean max_lag?)"),
    ("config-bool-for-int", ("loadgen", "--config", "{tmp}/bool.yml"), {}, CONFIG,
     "bool.yml: workers: must be an integer, got True"),
    ("config-empty-name", ("loadgen", "--config", ""), {}, CONFIG, "config file: the name is empty"),
    ("config-from-env-directory", ("consume",), {"FRAME_BUFFER_CONFIG": "{tmp}"}, CONFIG,
     "config file {tmp}: Is a directory"),
]


@pytest.fixture
def place(tmp_path: Path, stream_name: str) -> Iterator[Place]:
    """Files the rows name, a Redis key that holds a string, and a port something listens on."""
    (tmp_path / "float.yml").write_text("max_lag: 5.5\n")
    (tmp_path / "negative.yml").write_text("workers: -1\n")
    (tmp_path / "binary.yml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    (tmp_path / "list.yml").write_text("- workers\n- 3\n")
    (tmp_path / "invalid.yml").write_text("workers: [1, 2\n")
    (tmp_path / "unknown.yml").write_text("max_lagg: 3\n")
    (tmp_path / "bool.yml").write_text("workers: yes\n")
    client = redis.Redis.from_url(REDIS_URL)
    string_key = f"test_string_{uuid.uuid4().hex[:8]}"
    client.set(string_key, "not a stream")
    client.set(f"{string_key}:dlq", "not a stream either")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield Place(stream_name, tmp_path, string_key, busy.getsockname()[1])
    client.delete(string_key, f"{string_key}:dlq", stream_name, f"{stream_name}:dlq")
    client.close()


def fill(text: str, place: Place) -> str:
    return text.format(stream=place.stream, tmp=place.tmp, string_key=place.string_key, busy_port=place.busy_port)


@pytest.mark.parametrize(("argv", "env", "code", "culprit"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_a_bad_input_is_one_line_naming_it_with_the_documented_exit_code(
    place: Place, argv: tuple[str, ...], env: dict[str, str], code: int, culprit: str
) -> None:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("FRAME_BUFFER_")}
    environ |= {"FRAME_BUFFER_REDIS_URL": REDIS_URL} | {key: fill(value, place) for key, value in env.items()}
    try:
        result = subprocess.run([FRAME_BUFFER, *(fill(arg, place) for arg in argv)], capture_output=True, text=True,
                                timeout=60, env=environ, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:  # the input was taken: a service started and kept running
        pytest.fail(f"still running after 60 s, the input was accepted; stderr: {exc.stderr!r}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if table := os.environ.get("FB_TEST_ERROR_TABLE"):  # docs/bad-inputs.md is written this way
        record(Path(table), argv, env, result.returncode, lines, place=place)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    assert lines[0].startswith("frame-buffer"), lines[0]
    assert fill(culprit, place) in lines[0]
    assert result.returncode == code, lines[0]


def record(table: Path, argv: tuple[str, ...], env: dict[str, str], code: int, lines: list[str], *,
           place: Place) -> None:
    """Append the row as the user sees it: the command, the variables set, the exit code and the stderr line,
    with this run's temporary names shown as placeholders so that the table is the same from run to run."""
    names = {str(place.tmp): "$TMP", place.string_key: "$STRING_KEY", place.stream: "$STREAM",
             str(place.busy_port): "$BUSY_PORT"}

    def cell(text: str) -> str:
        for name, shown in names.items():
            text = text.replace(name, shown)
        return text.replace("|", "\\|") or " "

    command = cell(" ".join(fill(arg, place) for arg in argv))
    variables = cell(" ".join(f"{k}={fill(v, place)}" for k, v in env.items()))
    variables = f"`{variables}`" if variables.strip() else " "
    with table.open("a") as out:
        out.write(f"| `{command}` | {variables} | {code} | {cell(' / '.join(lines))} |\n")
