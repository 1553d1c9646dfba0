"""What the commands say about groups and backpressure, their rates, their clean-up, and how they end
(Ctrl-C, a closed pipe, --help, --version): real processes against the real local Redis."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import threading

import redis

from frame_buffer.frame import Frame
from frame_buffer.queue import QueueSettings, open_queue
from tests.cli.test_commands import FRAME_BUFFER, last_json, run
from tests.conftest import AMQP_URL, REDIS_URL
from tests.servers import wait_until

#: Backpressure within a second: 20 entries of backlog, a publish waits 0.5 s, the drain 1 s.
SMALL_LAG = {"FRAME_BUFFER_MAX_LAG": "20", "FRAME_BUFFER_PUBLISH_TIMEOUT_S": "0.5",
             "FRAME_BUFFER_DRAIN_TIMEOUT_S": "1"}


def group_names(client: redis.Redis, stream: str) -> list[str]:
    return sorted(group["name"].decode() for group in client.xinfo_groups(stream))


def test_loadgen_names_the_group_it_waits_for_and_blames_backpressure_not_the_server(stream_name: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        result = run("loadgen", "--fps", "0", "--duration", "3", "--size", "16x16", "--stream", stream_name,
                     env=SMALL_LAG)
        lines = result.stderr.splitlines()
        assert result.returncode == 1, result.stderr
        assert lines[0].startswith(f"loadgen: declares group 'workers' on redis:{stream_name}; publish waits")
        assert "max_lag 20" in lines[0]
        last = lines[-1]
        assert re.search(r"frame-buffer loadgen: \d+ frames not published: backpressure: group 'workers' has a "
                         r"backlog of \d+ entries, at or over max_lag 20", last), last
        assert "start a consumer of that group (frame-buffer consume --group workers)" in last
        assert "--group" in last and "--no-group" in last
        assert "did not answer" not in result.stderr and "breaker" not in last
        assert group_names(client, stream_name) == ["workers"]
    finally:
        client.delete(stream_name, f"{stream_name}:dlq")


def test_loadgen_with_no_group_declares_none_and_says_the_stream_itself_is_full(stream_name: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        result = run("loadgen", "--fps", "0", "--duration", "3", "--size", "16x16", "--stream", stream_name,
                     "--no-group", env=SMALL_LAG)
        lines = result.stderr.splitlines()
        assert result.returncode == 1, result.stderr
        assert lines[0].startswith(f"loadgen: declares no group on redis:{stream_name}: entries stay in the stream")
        assert re.search(r"backpressure: the stream holds \d+ entries, at or over max_lag 20", lines[-1])
        assert "raise FRAME_BUFFER_MAX_LAG" in lines[-1]
        assert group_names(client, stream_name) == []
    finally:
        client.delete(stream_name, f"{stream_name}:dlq")


def test_loadgen_group_declares_the_group_a_consumer_then_reads(stream_name: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        loaded = run("loadgen", "--fps", "200", "--duration", "0.5", "--size", "16x16", "--stream", stream_name,
                     "--group", "audit", "--group", "archive", "--json")
        assert loaded.returncode == 0, loaded.stderr
        assert "declares groups 'audit', 'archive'" in loaded.stderr.splitlines()[0]
        summary = last_json(loaded.stdout)
        assert summary["groups"] == ["audit", "archive"]
        assert group_names(client, stream_name) == ["archive", "audit"]
        consumed = run("consume", "--group", "audit", "--stream", stream_name, "--idle-exit", "0.5", "--json")
        assert consumed.stderr.startswith(f"consume: reads group 'audit' of redis:{stream_name}")
        assert last_json(consumed.stdout)["consumed"] == summary["published"]
        assert group_names(client, stream_name) == ["archive", "audit"], "consume declared another group"
    finally:
        client.delete(stream_name, f"{stream_name}:dlq")


def test_consume_has_no_rate_for_one_batch_and_one_for_several(stream_name: str) -> None:
    with open_queue("redis", redis_url=REDIS_URL, settings=QueueSettings(stream=stream_name, groups=("g",))) as q:
        q.publish_many([Frame("cam0", seq, b"x" * 64) for seq in range(6)])
    try:
        one = run("consume", "--group", "g", "--stream", stream_name, "--idle-exit", "0.3", "--json")
        summary = last_json(one.stdout)
        assert (summary["consumed"], summary["batches"], summary["fps"]) == (6, 1, None)
        assert "consumed 6 frames (n/a frames/s)" in one.stdout
        client = redis.Redis.from_url(REDIS_URL)
        client.xgroup_create(stream_name, "h", id="0")
        several = last_json(run("consume", "--group", "h", "--stream", stream_name, "--batch", "2",
                                "--idle-exit", "0.3", "--json").stdout)
        assert several["batches"] == 3 and isinstance(several["fps"], float) and several["fps"] > 0
    finally:
        redis.Redis.from_url(REDIS_URL).delete(stream_name, f"{stream_name}:dlq")


def test_the_demo_deletes_the_stream_it_made_and_keeps_one_it_found(stream_name: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        made = run("demo", "--stream", stream_name, "--duration", "1", "--fps", "50", "--size", "32x24")
        assert made.returncode == 0, made.stderr
        assert "deletes the stream at the end" in made.stderr
        assert client.exists(stream_name, f"{stream_name}:dlq") == 0
        progress = [tuple(map(int, m.groups())) for m in re.finditer(r"demo: in (\d+) {2}out (\d+)", made.stderr)]
        assert progress and all(out <= into for into, out in progress), progress

        client.xgroup_create(stream_name, "someone_else", id="$", mkstream=True)
        found = run("demo", "--stream", stream_name, "--duration", "0.5", "--fps", "20", "--size", "32x24")
        assert found.returncode == 0, found.stderr
        assert f"leaves {stream_name} as found" in found.stderr
        assert client.exists(stream_name) == 1
    finally:
        client.delete(stream_name, f"{stream_name}:dlq")


def test_output_into_a_closed_pipe_ends_with_141_and_not_a_word(stream_name: str) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader went away before the first byte, as `| head -1` does after its line
    try:
        result = subprocess.run([FRAME_BUFFER, "dlq", "list", "--json", "--stream", stream_name], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_ctrl_c_ends_a_command_with_130_and_no_traceback(stream_name: str) -> None:
    process = subprocess.Popen([FRAME_BUFFER, "consume", "--stream", stream_name, "--group", "g", "--idle-exit",
                                "600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any(line.startswith("consume: reads group") for line in lines), 30, "consume to start")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
        reader.join(timeout=30)
        assert not any("Traceback" in line for line in lines), lines
    finally:
        process.kill()
        process.wait()
        redis.Redis.from_url(REDIS_URL).delete(stream_name, f"{stream_name}:dlq")


def test_help_shows_defaults_and_exit_codes_and_version_is_the_installed_one() -> None:
    loadgen = run("loadgen", "--help").stdout
    flat = " ".join(loadgen.split())
    for default in ("(default: 100.0)", "(default: 10.0)", "(default: 640x480)", "(default: 1)", "(default: 32)"):
        assert default in flat, default
    assert "--group GROUP" in loadgen and "FRAME_BUFFER_GROUP, else workers" in flat
    assert "(default: 32)" in " ".join(run("consume", "--help").stdout.split())
    assert "(default: 100)" in " ".join(run("dlq", "list", "--help").stdout.split())
    root = run("--help").stdout
    assert "exit codes:" in root and all(f"\n  {code} " in root for code in (0, 1, 2, 3, 130, 141))
    assert run("--version").stdout.strip() == f"frame-buffer {importlib.metadata.version('frame-buffer')}"


def test_loadgen_json_keeps_its_fields(stream_name: str) -> None:
    result = run("loadgen", "--fps", "100", "--duration", "0.3", "--size", "16x16", "--stream", stream_name,
                 "--json")
    try:
        summary = json.loads(result.stdout.splitlines()[-1])
        assert set(summary) >= {"published", "fps", "seconds", "dropped", "groups", "backpressure_waits"}
        assert summary["groups"] == ["workers"]
    finally:
        redis.Redis.from_url(REDIS_URL).delete(stream_name, f"{stream_name}:dlq")


def test_loadgen_on_rabbitmq_says_where_frames_go_without_a_group(stream_name: str) -> None:
    from frame_buffer.queue.rabbitmq import delete_topology

    try:
        result = run("loadgen", "--backend", "rabbitmq", "--amqp-url", AMQP_URL, "--stream", stream_name,
                     "--no-group", "--fps", "50", "--duration", "0.3", "--size", "16x16", "--json")
        assert result.returncode == 0, result.stderr
        first = result.stderr.splitlines()[0]
        assert first.startswith(f"loadgen: declares no group on rabbitmq:{stream_name}: frames go to the group queues")
        assert f"{stream_name}:unrouted, which the first group declared takes over" in first
        assert last_json(result.stdout)["groups"] == []
    finally:
        delete_topology(AMQP_URL, QueueSettings(stream=stream_name), ("workers",))
