"""Shard keys and the camera -> shard mapping (issue 16): stable, in range, every shard reachable, a shard's
keys in one slot, the keys of before with one shard on one server, and the shards spread over the masters of
a real cluster."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frame_buffer.checks import name_problem
from frame_buffer.queue import QueueSettings
from frame_buffer.queue.redis_streams.shards import (
    MAX_SHARDS,
    MIN_WINDOW,
    ShardLayout,
    shard_of,
    shard_tag,
    slot_of_tag,
    window,
)
from tests.cluster_servers import RedisClusterServers

SLOTS = 16384
cameras = st.text(min_size=1, max_size=40)
shard_counts = st.integers(1, MAX_SHARDS)
#: Stream names as the settings take them (printable, no spaces), and those without braces (the shard keys' own).
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Cf", "Co", "Cn", "Zs", "Zl", "Zp")),
                min_size=1, max_size=30).filter(lambda name: name_problem(name) is None)
streams = names.filter(lambda name: "{" not in name and "}" not in name)


def test_a_cameras_shard_is_a_crc32_pinned_across_processes_and_versions() -> None:
    """CRC-32 is a standard (its check value: 0xCBF43926 for "123456789"): these numbers hold in every Python,
    on every host, in every process (``hash()`` of a string is salted per process)."""
    assert shard_of("123456789", 1 << 32) == 0xCBF43926
    assert [shard_of(f"cam{i}", 16) for i in range(8)] == [0, 6, 12, 10, 9, 15, 5, 3]
    assert shard_of("entrée-nord", 1024) == shard_of("entrée-nord", 1024)
    code = ("import sys; from frame_buffer.queue.redis_streams.shards import shard_of; "
            "print([shard_of(f'cam{i}', 16) for i in range(8)])")
    for seed in ("1", "2"):  # another hash seed, another process: the same shards
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[0, 6, 12, 10, 9, 15, 5, 3]"


@given(camera=cameras, shards=shard_counts)
def test_a_camera_always_maps_to_one_shard_in_range(camera: str, shards: int) -> None:
    shard = shard_of(camera, shards)
    assert 0 <= shard < shards
    assert ShardLayout("s", shards).shard_of(camera) == shard == shard_of(camera, shards)


def test_a_lone_surrogate_in_a_camera_name_still_maps() -> None:
    assert 0 <= shard_of("cam\udc80", 16) < 16


@settings(max_examples=40, deadline=None)
@given(shards=shard_counts)
def test_every_shard_is_reached_by_some_camera(shards: int) -> None:
    reached = {shard_of(f"cam{i}", shards) for i in range(20 * shards)}
    assert reached == set(range(shards))


@settings(deadline=None)
@given(stream=streams, shards=shard_counts, data=st.data())
def test_every_key_of_a_shard_is_in_one_slot_inside_the_shards_window(stream: str, shards: int,
                                                                      data: st.DataObject) -> None:
    layout = ShardLayout(stream, shards, cluster=True)
    shard = data.draw(st.integers(0, shards - 1))
    tag = shard_tag(shard, shards)
    key, dlq = layout.stream_key(shard), layout.dead_letter_key(shard)
    assert key == f"{stream}:{{{tag}}}" and dlq == f"{key}:dlq"
    assert slot_of_tag(tag) == layout.slot(shard) == slot_of_tag(f"x{{{tag}}}y")
    low, high = window(shard, shards)
    assert low <= layout.slot(shard) < high <= SLOTS and high - low >= min(MIN_WINDOW, SLOTS // shards)
    assert tag == str(shard) or tag.startswith(f"{shard}.")


@given(shards=st.integers(1, 64))
def test_up_to_64_shards_the_windows_tile_the_slot_space(shards: int) -> None:
    windows = [window(shard, shards) for shard in range(shards)]
    assert windows[0][0] == 0 and windows[-1][1] == SLOTS
    assert all(left[1] == right[0] for left, right in itertools.pairwise(windows))


@given(stream=names)
def test_one_shard_on_one_server_keeps_the_keys_of_before(stream: str) -> None:
    layout = ShardLayout(stream)
    assert not layout.tagged
    assert layout.shard_keys() == [(stream, QueueSettings(stream=stream).dead_letter_stream)]
    assert layout.shard_keys() == [(stream, f"{stream}:dlq")]


def test_with_more_shards_or_a_cluster_every_key_is_tagged() -> None:
    assert ShardLayout("frame_queue", 1, cluster=True).shard_keys() == [("frame_queue:{0}", "frame_queue:{0}:dlq")]
    assert ShardLayout("frame_queue", 2).tagged
    keys = [key for key, _ in ShardLayout("frame_queue", 16).shard_keys()]
    assert keys[:3] == ["frame_queue:{0.13}", "frame_queue:{1.10}", "frame_queue:{2.3}"]
    assert keys[9] == "frame_queue:{9}"  # its own number already hashes into its window
    assert len(set(keys)) == 16


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ShardLayout("s", 0), "shards: must be 1 to 1024, got 0"),
        (lambda: ShardLayout("s", MAX_SHARDS + 1), "shards: must be 1 to 1024, got 1025"),
        (lambda: ShardLayout("a{b}", 2), "stream: must not contain { or } with shard streams, got 'a{b}'"),
        (lambda: ShardLayout("a}", 1, cluster=True), "stream: must not contain { or }"),
        (lambda: ShardLayout("s").stream_key(1), "shard 1 of 1: the only shard is 0"),
        (lambda: shard_tag(16, 16), "shard 16 of 16: needs 0 <= shard < shards <= 1024"),
        (lambda: shard_tag(-1, 16), "shard -1 of 16"),
        (lambda: shard_tag(0, 2000), "shard 0 of 2000"),
    ],
)
def test_impossible_layouts_are_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        make()  # type: ignore[operator]


def test_braces_in_a_stream_are_fine_with_the_keys_of_before() -> None:
    assert ShardLayout("a{b}").stream_key(0) == "a{b}"


@pytest.mark.cluster
def test_16_shards_spread_over_the_three_masters_of_a_real_cluster(redis_cluster: RedisClusterServers) -> None:
    """The slots come from the cluster's own map (CLUSTER NODES) and its own hashing (CLUSTER KEYSLOT)."""
    stream = f"test_{uuid.uuid4().hex[:12]}"
    layout = ShardLayout(stream, 16, cluster=True)
    node = redis_cluster.masters()[0].client()
    try:
        for shard, (key, dlq) in enumerate(layout.shard_keys()):
            assert node.execute_command("CLUSTER KEYSLOT", key) == node.execute_command("CLUSTER KEYSLOT", dlq) \
                == layout.slot(shard)
    finally:
        node.close()
    held: dict[int, list[int]] = {}
    for shard in range(layout.shards):
        held.setdefault(redis_cluster.master_of_slot(layout.slot(shard)).port, []).append(shard)
    assert len(held) == 3, held
    assert all(len(shards) >= 4 for shards in held.values()), held
    # And the keys work as keys there: a shard's stream and dead letters move together in one MULTI.
    client = redis_cluster.client()
    try:
        key, dlq = layout.stream_key(5), layout.dead_letter_key(5)
        pipe = client.pipeline(transaction=True)
        pipe.xadd(key, {"h": "x"})
        pipe.xadd(dlq, {"h": "y"})
        pipe.execute()
        assert (client.xlen(key), client.xlen(dlq)) == (1, 1)
        client.delete(key, dlq)
    finally:
        client.close()
