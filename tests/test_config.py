"""Settings: defaults, YAML, environment precedence, and errors that name the field."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from frame_buffer.checks import choices_of
from frame_buffer.codec import Checksum
from frame_buffer.config import DEFAULT_SHARDS, ConfigError, Settings
from frame_buffer.flow.backpressure import Policy
from frame_buffer.queue import open_queue
from frame_buffer.queue.settings import BACKENDS, DEFAULT_AMQP_URL, DEFAULT_REDIS_URL, QueueOptions, QueueSettings
from frame_buffer.sources import SourceSpec, parse_size


def test_defaults_are_the_local_services() -> None:
    settings = Settings.load(environ={})
    assert (settings.backend, settings.redis_url, settings.stream) == (
        "redis", "redis://127.0.0.1:6379/0", "frame_queue")
    assert settings.queue_settings().groups == ("workers",)


def test_environment_overrides_yaml_which_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "fb.yml"
    config.write_text("workers: 4\nstream: from_yaml\ncompress: true\nsources: [synthetic:a, synthetic:b]\n")
    settings = Settings.load(config, environ={"FRAME_BUFFER_STREAM": "from_env"})
    assert (settings.workers, settings.stream, settings.compress) == (4, "from_env", True)
    assert settings.sources == ("synthetic:a", "synthetic:b")
    assert settings.codec().compress is True


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FRAME_BUFFER_WORKERS": "0"}, "FRAME_BUFFER_WORKERS: must be positive"),
        ({"FRAME_BUFFER_HTTP_PORT": "70000"}, "FRAME_BUFFER_HTTP_PORT: must be a port number"),
        ({"FRAME_BUFFER_COMPRESS": "maybe"}, "FRAME_BUFFER_COMPRESS: must be a boolean"),
        ({"FRAME_BUFFER_PUBLISH_TIMEOUT_S": "soon"}, "FRAME_BUFFER_PUBLISH_TIMEOUT_S: must be a number"),
        ({"FRAME_BUFFER_POLICY": "drop_all"}, "FRAME_BUFFER_POLICY: must be one of block, drop_oldest"),
        ({"FRAME_BUFFER_HANDLER": "nocolon"}, "FRAME_BUFFER_HANDLER: must be module:function"),
        ({"FRAME_BUFFER_STREAM": ""}, "FRAME_BUFFER_STREAM: must not be empty"),
        ({"FRAME_BUFFER_AMQP_URL": "redis://x"}, "FRAME_BUFFER_AMQP_URL: must start with amqp://"),
    ],
)
def test_wrong_values_name_the_field(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ=environ)


def test_yaml_errors_name_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "fb.yml"
    config.write_text("wokers: 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'wokers'"):
        Settings.load(config, environ={})
    config.write_text("workers: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"fb.yml: workers: must be an integer"):
        Settings.load(config, environ={})
    config.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        Settings.load(config, environ={})
    with pytest.raises(ConfigError, match=r"missing\.yml"):
        Settings.load(tmp_path / "missing.yml", environ={})


def test_source_specs_parse_and_refuse_nonsense() -> None:
    spec = SourceSpec.parse("rtsp:cam2:url=rtsp://10.0.0.5:8554/live?x=1")
    assert (spec.kind, spec.camera, spec.options) == ("rtsp", "cam2", {"url": "rtsp://10.0.0.5:8554/live?x=1"})
    assert SourceSpec.parse("synthetic:c:fps=5:size=32x24").options == {"fps": "5", "size": "32x24"}
    with pytest.raises(ConfigError, match="FRAME_BUFFER_SOURCES"):
        SourceSpec.parse("webcam:c")
    assert parse_size("640x480") == (480, 640)
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_size("big")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FRAME_BUFFER_PUBLISH_TIMEOUT_S": "-1"}, "FRAME_BUFFER_PUBLISH_TIMEOUT_S: must not be negative, got -1.0"),
        ({"FRAME_BUFFER_RETRY_BASE_S": "-1"}, "FRAME_BUFFER_RETRY_BASE_S: must not be negative"),
        ({"FRAME_BUFFER_RETRY_CAP_S": "-1"}, "FRAME_BUFFER_RETRY_CAP_S: must not be negative"),
        ({"FRAME_BUFFER_RETRY_CAP_S": "0.05"},
         "FRAME_BUFFER_RETRY_CAP_S: retry_cap_s 0.05 must be at least retry_base_s"),
        ({"FRAME_BUFFER_RETRY_BASE_S": "20"}, "FRAME_BUFFER_RETRY_BASE_S: retry_cap_s 10.0 must be at least"),
        ({"FRAME_BUFFER_DRAIN_TIMEOUT_S": "0"}, "FRAME_BUFFER_DRAIN_TIMEOUT_S: must be positive"),
        ({"FRAME_BUFFER_STALL_TIMEOUT_S": "-3"}, "FRAME_BUFFER_STALL_TIMEOUT_S: must be positive"),
        ({"FRAME_BUFFER_PUBLISH_TIMEOUT_S": "nan"}, "FRAME_BUFFER_PUBLISH_TIMEOUT_S: must be a finite number"),
        ({"FRAME_BUFFER_DRAIN_TIMEOUT_S": "inf"}, "FRAME_BUFFER_DRAIN_TIMEOUT_S: must be a finite number"),
        ({"FRAME_BUFFER_PUBLISH_TIMEOUT_S": "1e9"}, "FRAME_BUFFER_PUBLISH_TIMEOUT_S: must be at most 86400"),
        ({"FRAME_BUFFER_MAX_LAG": "5.5"}, "FRAME_BUFFER_MAX_LAG: must be an integer, got '5.5'"),
        ({"FRAME_BUFFER_MAX_LAG": "99999999999999999999"}, "FRAME_BUFFER_MAX_LAG: must be at most 1000000000"),
        ({"FRAME_BUFFER_WORKERS": "9" * 5000}, r"FRAME_BUFFER_WORKERS: must be an integer, got '9{59}\.\.\.' \(5000"),
        ({"FRAME_BUFFER_MAX_FRAME_BYTES": str(2**30)}, "FRAME_BUFFER_MAX_FRAME_BYTES: must be at most 536870912"),
        ({"FRAME_BUFFER_STREAM": "a b"}, "FRAME_BUFFER_STREAM: must not contain spaces or control characters"),
        ({"FRAME_BUFFER_GROUP": "g" * 201}, "FRAME_BUFFER_GROUP: must be at most 200 bytes"),
        ({"FRAME_BUFFER_HTTP_HOST": "999.1.1.1"}, "FRAME_BUFFER_HTTP_HOST: must be an IP address or a host name"),
        ({"FRAME_BUFFER_REDIS_URL": "redis://127.0.0.1:notaport/0"},
         "FRAME_BUFFER_REDIS_URL: port must be an integer 1 to 65535, got 'notaport'"),
        ({"FRAME_BUFFER_REDIS_URL": "redis://127.0.0.1:0/0"}, "FRAME_BUFFER_REDIS_URL: port must be 1 to 65535, got 0"),
        ({"FRAME_BUFFER_REDIS_URL": "redis://h:6379/zero"}, "FRAME_BUFFER_REDIS_URL: the database after the port must"),
        ({"FRAME_BUFFER_REDIS_URL": "redis://"}, "FRAME_BUFFER_REDIS_URL: needs a host"),
        ({"FRAME_BUFFER_REDIS_URL": "redis://:s3cret@h:70000/0"}, r"got 70000 in 'redis://:\*\*\*@h:70000/0'"),
        ({"FRAME_BUFFER_AMQP_URL": "amqp://guest:guest@h:99999/%2F"}, "FRAME_BUFFER_AMQP_URL: port must be 1 to 65535"),
        ({"FRAME_BUFFER_MAX_LAGG": "5"},
         r"FRAME_BUFFER_MAX_LAGG: no such setting \(did you mean FRAME_BUFFER_MAX_LAG\?\)"),
        ({"FRAME_BUFFER_REQUIRE_DEPLOY": "1"}, "FRAME_BUFFER_REQUIRE_DEPLOY: no such setting"),
    ],
)
def test_out_of_range_and_malformed_values_are_refused_naming_the_variable(environ: dict[str, str],
                                                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ=environ)


def test_urls_hosts_and_names_that_are_fine_are_taken() -> None:
    settings = Settings.load(environ={
        "FRAME_BUFFER_REDIS_URL": "redis://:p%2Fw@redis_1:6380/3", "FRAME_BUFFER_AMQP_URL": "amqps://u:p@[::1]/vh",
        "FRAME_BUFFER_HTTP_HOST": "::", "FRAME_BUFFER_STREAM": "caméra:hall"})
    assert settings.redis_url.endswith("/3") and settings.http_host == "::" and settings.stream == "caméra:hall"
    assert Settings.load(environ={"FRAME_BUFFER_REDIS_URL": "unix:///run/redis.sock"}).redis_url.startswith("unix")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_lag: 5.5\n", "max_lag: must be an integer, got 5.5"),
        ("max_lag: 5.0\n", "max_lag: must be an integer, got 5.0"),
        ("workers: true\n", "workers: must be an integer, got True"),
        ("workers: -1\n", "workers: must be positive, got -1"),
        ("publish_timeout_s: false\n", "publish_timeout_s: must be a number, got False"),
        ("publish_timeout_s: .inf\n", "publish_timeout_s: must be a finite number"),
        ("stream: [a, b]\n", "stream: must be a string, got"),
        ("stream:\n", "stream: must be a string, got None"),
        ("sources: {a: 1}\n", "sources: must be a list of strings"),
        ("compress: maybe\n", "compress: must be a boolean"),
        ("max_lagg: 3\n", r"unknown setting 'max_lagg' \(did you mean max_lag\?\)"),
        ("a: [\n", "not valid YAML: line 2 column 1"),
        ("- a\n- b\n", "must be a mapping of setting names to values, got a list"),
        ("just text\n", "must be a mapping of setting names to values, got a str"),
    ],
)
def test_yaml_values_are_typed_and_named_by_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "config.yml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.load(config, environ={})
    assert str(caught.value).startswith(f"{config}") or str(caught.value).startswith(f"config file {config}")
    assert "FRAME_BUFFER_" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_yaml_range_error_names_the_file_and_key_not_the_variable(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("workers: -1\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load(config, environ={})
    assert str(caught.value) == f"{config}: workers: must be positive, got -1"


def test_the_flag_is_named_for_a_command_line_value_and_the_variable_otherwise() -> None:
    with pytest.raises(ConfigError, match=r"^--redis-url: port must be"):
        Settings.load(environ={}, overrides={"redis_url": "redis://h:notaport/0"})
    with pytest.raises(ConfigError, match=r"^--source: must be printable"):
        Settings.load(environ={}, overrides={"sources": ("synthetic:\x01",)}, labels={"sources": "--source"})
    # retry_cap_s is checked against retry_base_s: the one the user set is named.
    with pytest.raises(ConfigError, match=r"^FRAME_BUFFER_RETRY_BASE_S: retry_cap_s"):
        Settings.load(environ={"FRAME_BUFFER_RETRY_BASE_S": "11"})


@pytest.mark.parametrize("kind", ["directory", "binary", "missing", "empty name"])
def test_a_config_file_that_cannot_be_read_is_one_line_naming_it(tmp_path: Path, kind: str) -> None:
    path = {"directory": tmp_path, "binary": tmp_path / "x.yml", "missing": tmp_path / "missing.yml",
            "empty name": ""}[kind]
    (tmp_path / "x.yml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ConfigError) as caught:
        Settings.load(path, environ={})
    message = str(caught.value)
    assert message.startswith("config file") and "\n" not in message
    assert {"directory": "Is a directory", "binary": "not UTF-8 text (byte 0x89 at offset 0)",
            "missing": "No such file", "empty name": "the name is empty"}[kind] in message


def test_the_config_variable_is_the_one_non_setting_variable(tmp_path: Path) -> None:
    config = tmp_path / "fb.yml"
    config.write_text("workers: 3\n")
    assert Settings.load(environ={"FRAME_BUFFER_CONFIG": str(config)}).workers == 3


def test_a_float_setting_takes_an_integer_from_yaml(tmp_path: Path) -> None:
    config = tmp_path / "fb.yml"
    config.write_text("publish_timeout_s: 2\nstall_timeout_s: 0.5\n")
    settings = Settings.load(config, environ={})
    assert (settings.publish_timeout_s, settings.stall_timeout_s) == (2.0, 0.5)
    assert Settings.load(environ={}).stall_timeout_s == 60.0


def test_the_queue_settings_are_the_settings_queue_part() -> None:
    """One declaration: Settings takes the queue's fields and defaults from QueueOptions, not a copy."""
    names = {spec.name for spec in fields(QueueOptions)}
    assert names <= {spec.name for spec in fields(Settings)}
    assert Settings.load(environ={}).queue_settings() == QueueSettings(groups=("workers",))
    assert Settings.load(environ={}).queue_settings(["a", "b"]).groups == ("a", "b")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("max_lag", 2_000_000_000, "must be at most 1000000000, got 2000000000"),
        ("publish_timeout_s", 1e6, "must be at most 86400, got 1000000.0"),
        ("claim_min_idle_ms", 0, "must be positive, got 0"),
        ("max_deliveries", 1001, "must be at most 1000, got 1001"),
        ("stream", "a b", "must not contain spaces or control characters, got 'a b'"),
    ],
)
def test_the_queue_and_the_service_refuse_a_queue_setting_with_the_same_check(field: str, value: object,
                                                                                 reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: {re.escape(reason)}$"):
        QueueSettings(**{field: value})  # type: ignore[arg-type]
    flag = f"--{field.replace('_', '-')}"
    with pytest.raises(ConfigError, match=f"^{flag}: {re.escape(reason)}$"):
        Settings.load(environ={}, overrides={field: value})


def test_every_default_written_as_a_variable_reads_back_as_the_default() -> None:
    """Each field's type (from its annotation) has a conversion from text, and the defaults pass the checks."""
    defaults = Settings.load(environ={})
    environ = {}
    for spec in fields(Settings):
        value = getattr(defaults, spec.name)
        if value is None:
            continue
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        environ[f"FRAME_BUFFER_{spec.name.upper()}"] = text.lower() if isinstance(value, bool) else text
    assert Settings.load(environ=environ) == defaults


def test_the_choices_are_the_types_literals() -> None:
    hints = get_type_hints(Settings)
    assert choices_of(hints["policy"]) == get_args(Policy) == ("block", "drop_oldest", "drop_newest")
    assert choices_of(hints["checksum"]) == get_args(Checksum)
    assert choices_of(hints["backend"]) == BACKENDS == ("redis", "rabbitmq", "memory")
    assert choices_of(hints["cpu_wake_latency_us"]) is None


def test_the_default_servers_are_written_once() -> None:
    settings = Settings.load(environ={})
    assert (settings.redis_url, settings.amqp_url) == (DEFAULT_REDIS_URL, DEFAULT_AMQP_URL)
    assert inspect.signature(open_queue).parameters["redis_url"].default == DEFAULT_REDIS_URL
    assert inspect.signature(open_queue).parameters["amqp_url"].default == DEFAULT_AMQP_URL


# -- issue 16: redis_mode, shards and cluster seed URLs ------------------------------------------------------
def test_standalone_is_the_default_mode_with_one_shard_and_cluster_defaults_to_16() -> None:
    settings = Settings.load(environ={})
    assert (settings.redis_mode, settings.shards, settings.shard_count) == ("standalone", None, 1)
    assert settings.redis_seeds == (DEFAULT_REDIS_URL,)
    assert Settings.load(environ={"FRAME_BUFFER_REDIS_MODE": "cluster"}).shard_count == DEFAULT_SHARDS["cluster"] == 16
    assert Settings.load(environ={"FRAME_BUFFER_SHARDS": "4"}).shard_count == 4
    assert Settings.load(environ={"FRAME_BUFFER_SHARDS": ""}).shards is None  # unset: the mode's default


def test_cluster_mode_takes_several_seed_urls_and_keeps_them_apart() -> None:
    seeds = "redis://:pw@10.0.0.1:7000/0,redis://:pw@10.0.0.2:7001,redis://:pw@node-3:7002/"
    settings = Settings.load(environ={"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": seeds,
                                      "FRAME_BUFFER_SHARDS": "32"})
    assert settings.redis_seeds == tuple(seeds.split(",")) and settings.shard_count == 32
    assert Settings.load(environ=settings.environment()) == settings  # a worker process reads them back
    one = Settings.load(environ={"FRAME_BUFFER_REDIS_MODE": "cluster"})
    assert one.redis_seeds == (DEFAULT_REDIS_URL,)
    # braces are the shard keys' hash tags; with the one stream key of before they stay allowed
    assert Settings.load(environ={"FRAME_BUFFER_STREAM": "cam{1}"}).stream == "cam{1}"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FRAME_BUFFER_REDIS_MODE": "sentinel"},
         "FRAME_BUFFER_REDIS_MODE: must be one of standalone, cluster, got 'sentinel'"),
        ({"FRAME_BUFFER_SHARDS": "0"}, "FRAME_BUFFER_SHARDS: must be positive, got 0"),
        ({"FRAME_BUFFER_SHARDS": "1025"}, "FRAME_BUFFER_SHARDS: must be at most 1024, got 1025"),
        ({"FRAME_BUFFER_SHARDS": "two"}, "FRAME_BUFFER_SHARDS: must be an integer, got 'two'"),
        # standalone keeps exactly one URL, and today's messages for a bad one
        ({"FRAME_BUFFER_REDIS_URL": "redis://a:7000/0,redis://b:7001/0"},
         "FRAME_BUFFER_REDIS_URL: several URLs (seed nodes) need redis_mode cluster (FRAME_BUFFER_REDIS_MODE); "
         "standalone takes one"),
        ({"FRAME_BUFFER_REDIS_URL": "redis://a:7000/0,redis://b:x/0"},
         "FRAME_BUFFER_REDIS_URL: the database after the port must be an integer, got '0,redis://b:x/0'"),
        # cluster mode: each seed checked, database 0, the same credentials
        ({"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": ""},
         "FRAME_BUFFER_REDIS_URL: must not be empty"),
        ({"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "redis://a:7000,redis://b:x"},
         "FRAME_BUFFER_REDIS_URL: seed 2 of 2: port must be an integer 1 to 65535, got 'x' in 'redis://b:x'"),
        ({"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "redis://a:7000,,redis://b:7001"},
         "FRAME_BUFFER_REDIS_URL: seed 2 of 3: empty (a stray comma?)"),
        ({"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "redis://a:7000,"},
         "FRAME_BUFFER_REDIS_URL: seed 2 of 2: empty"),
        ({"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "redis://a:7000/3"},
         "FRAME_BUFFER_REDIS_URL: a cluster has database 0 only, got '3' in 'redis://a:7000/3'"),
        ({"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "unix:///run/redis.sock"},
         "FRAME_BUFFER_REDIS_URL: a cluster is reached over TCP (redis:// or rediss://)"),
        ({"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "redis://:a@h:1,redis://:b@h:2"},
         "FRAME_BUFFER_REDIS_URL: seed 2 of 2: another scheme, user or password than seed 1"),
        ({"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_STREAM": "cam{1}"},
         "FRAME_BUFFER_STREAM: must not contain { or } with shard streams (hash tags), got 'cam{1}'"),
        ({"FRAME_BUFFER_SHARDS": "2", "FRAME_BUFFER_STREAM": "q}"}, "FRAME_BUFFER_STREAM: must not contain { or }"),
        ({"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "redis://h:1,rediss://h:2"},
         "FRAME_BUFFER_REDIS_URL: seed 2 of 2: another scheme, user or password than seed 1"),
        ({"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": "redis://u:s3cret@h:1,redis://u:s3cret@h:0"},
         "FRAME_BUFFER_REDIS_URL: seed 2 of 2: port must be 1 to 65535, got 0 in 'redis://u:***@h:0'"),
    ],
)
def test_a_bad_mode_shard_count_or_seed_list_is_one_line_naming_the_setting(environ: dict[str, str],
                                                                            message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}") as caught:
        Settings.load(environ=environ)
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_seed_list_in_yaml_is_named_by_its_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "fb.yml"
    config.write_text("redis_mode: cluster\nredis_url: redis://a:7000/0,redis://b:7001/5\n")
    with pytest.raises(ConfigError, match=r"fb.yml: redis_url: seed 2 of 2: a cluster has database 0 only"):
        Settings.load(config, environ={})
