"""Settings: defaults, YAML, environment precedence, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from frame_buffer.config import ConfigError, Settings
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
