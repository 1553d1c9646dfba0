"""docs/wire-format.md is enough to talk to the service: an encoder and a decoder written from it alone
(``tests/wire/third_party.py``) round-trip frames with the real service on a real Redis, both ways."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import redis
import xxhash

from frame_buffer.codec import FrameCodec
from frame_buffer.frame import Frame
from frame_buffer.queue import Delivery, QueueSettings
from frame_buffer.queue.redis_streams import RedisStreamsQueue
from tests.conftest import REDIS_URL
from tests.wire import third_party
from tests.wire.third_party import Rejected

FRAME_BUFFER = str(Path(sys.executable).with_name("frame-buffer"))
DTYPES = ("uint8", "uint16", "float32")
SHAPES = [(48, 64, 3), (7,), (0, 3), (), (2, 3, 4, 1)]


@pytest.fixture
def stream() -> Iterator[str]:
    name = f"test_wire_{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(name, f"{name}:dlq")
    client.close()


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(REDIS_URL)
    yield connection
    connection.close()


def sample(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray[Any, Any]:
    values = np.random.default_rng(seed).integers(0, 60_000, size=shape)
    return values.astype(dtype) / (7 if dtype == "float32" else 1)  # type: ignore[no-any-return]


def cases() -> list[tuple[str, Any, dict[str, Any]]]:
    """(camera, data, options of the third-party encoder): every codec, dtype and a few shapes."""
    out: list[tuple[str, Any, dict[str, Any]]] = []
    for index, (dtype, shape) in enumerate((d, s) for d in DTYPES for s in SHAPES):
        data = np.asarray(sample(dtype, shape, index), dtype=dtype)
        out.append((f"raw-{dtype}", data, {}))
        flat = np.full(shape, index, dtype=dtype)  # compresses well
        out.append((f"lz4-{dtype}", flat, {"lz4_block": True}))
    out.append(("jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3, {"meta": {"fmt": "jpeg", "q": 90}}))
    out.append(("empty-bytes", b"", {"sumk": "none"}))
    out.append(("camera \u00e9\u00e8 " + "x" * 240, np.asarray(sample("uint8", (4, 4, 3), 1), dtype="uint8"),
                {"meta": {"exposure": 1.5, "gain": None, "auto": True, "n": -3}}))
    return out


def assert_same(got: Any, want: Any) -> None:
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    else:
        assert bytes(got) == bytes(want)


def drain(queue: RedisStreamsQueue, expected: int) -> list[Delivery]:
    got: list[Delivery] = []
    while len(got) < expected:
        batch = queue.consume("g", "c", count=100, block_ms=1000)
        assert batch, f"only {len(got)} of {expected} frames arrived"
        queue.ack(batch)
        got.extend(batch)
    return got


def test_the_third_party_codec_imports_nothing_from_the_service() -> None:
    source = Path(third_party.__file__).read_text()
    assert "frame_buffer" not in source.replace("``frame_buffer``", "")


def test_frames_written_by_a_third_party_are_consumed_by_the_service(stream: str, client: redis.Redis) -> None:
    queue = RedisStreamsQueue(REDIS_URL, QueueSettings(stream=stream, groups=("g",)))
    written = cases()
    for seq, (camera, data, options) in enumerate(written):
        header, payload = third_party.encode(camera, seq, 1_700_000_000_000_000_000 + seq, data, **options)
        client.xadd(stream, {"h": header, "p": payload})
    got = drain(queue, len(written))
    assert queue.dead_letters() == [], [(x.reason, x.error) for x in queue.dead_letters()]
    for delivery, (camera, data, options) in zip(got, written, strict=True):
        frame = delivery.frame
        assert (frame.camera, frame.ts_ns - frame.seq) == (camera, 1_700_000_000_000_000_000)
        assert frame.meta == options.get("meta", {})
        assert_same(frame.data, data)
    queue.close()


@pytest.mark.parametrize("compress", [False, True])
def test_frames_published_by_the_service_are_decoded_by_a_third_party(
    stream: str, client: redis.Redis, compress: bool
) -> None:
    queue = RedisStreamsQueue(REDIS_URL, QueueSettings(stream=stream), FrameCodec(compress=compress))
    frames = [Frame(camera, seq, data, ts_ns=10**18 + seq, meta=options.get("meta", {}))
              for seq, (camera, data, options) in enumerate(cases())]
    queue.publish_many(frames)
    entries = client.xrange(stream)
    assert len(entries) == len(frames)
    codecs = set()
    for (_id, fields), frame in zip(entries, frames, strict=True):
        assert set(fields) == {b"h", b"p"}
        codecs.add(msgpack.unpackb(fields[b"h"])["codec"])
        decoded = third_party.decode(fields[b"h"], fields[b"p"])
        assert (decoded.camera, decoded.seq, decoded.ts_ns, decoded.meta) == (
            frame.camera, frame.seq, frame.ts_ns, frame.meta)
        assert_same(decoded.data, frame.data)
    assert codecs == ({"raw", "lz4", "bytes"} if compress else {"raw", "bytes"})
    queue.close()


def test_a_frame_buffer_consume_process_reads_third_party_frames(stream: str, client: redis.Redis) -> None:
    written = cases()
    for seq, (camera, data, options) in enumerate(written):
        header, payload = third_party.encode(camera, seq, 1_700_000_000_000_000_000, data, **options)
        client.xadd(stream, {"h": header, "p": payload})
    result = subprocess.run(
        [FRAME_BUFFER, "consume", "--backend", "redis", "--redis-url", REDIS_URL, "--stream", stream,
         "--group", "g", "--max-frames", str(len(written)), "--idle-exit", "10", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["consumed"], summary["dead_lettered"]) == (len(written), 0)
    assert "Traceback" not in result.stderr


def _valid() -> tuple[dict[str, Any], bytes]:
    """A valid raw frame's header map and payload, to break one thing at a time."""
    header, payload = third_party.encode("cam", 1, 2, np.arange(6, dtype="uint16").reshape(2, 3))
    return msgpack.unpackb(header), payload


def _lz4() -> tuple[dict[str, Any], bytes]:
    header, payload = third_party.encode("cam", 1, 2, np.zeros((2, 3), dtype="uint16"), lz4_block=True)
    return msgpack.unpackb(header), payload


def _resum(fields: dict[str, Any], payload: bytes) -> dict[str, Any]:
    return {**fields, "len": len(payload), "sum": xxhash.xxh3_64_intdigest(payload)}


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in _valid()[0].items() if k != key}


FIELDS, PAYLOAD = _valid()
LZ4_FIELDS, LZ4_PAYLOAD = _lz4()
_bad_prefix = (999).to_bytes(4, "little") + LZ4_PAYLOAD[4:]
_bad_block = LZ4_PAYLOAD[:4] + b"\xff" * 6
#: One defect each: (name, header bytes or None, payload or None, the reason docs/wire-format.md gives).
SINGLE_DEFECTS: list[tuple[str, bytes | None, bytes | None, str]] = [
    ("no h", None, PAYLOAD, "missing_header"),
    ("no p", msgpack.packb(FIELDS), None, "missing_payload"),
    ("not msgpack", b"\xc1", PAYLOAD, "bad_header"),
    ("trailing bytes", msgpack.packb(FIELDS) + b"\x00", PAYLOAD, "bad_header"),
    ("over 64 KiB", msgpack.packb({**FIELDS, "pad": "x" * 65536}), PAYLOAD, "bad_header"),
    ("not a map", msgpack.packb([1, 2]), PAYLOAD, "bad_header"),
    ("int key", msgpack.packb({**FIELDS, 5: 1}), PAYLOAD, "bad_header"),
    ("no seq", msgpack.packb(_without("seq")), PAYLOAD, "missing_field"),
    ("no dtype", msgpack.packb(_without("dtype")), PAYLOAD, "missing_field"),
    ("no shape", msgpack.packb(_without("shape")), PAYLOAD, "missing_field"),
    ("v 2", msgpack.packb({**FIELDS, "v": 2}), PAYLOAD, "bad_version"),
    ("v true", msgpack.packb({**FIELDS, "v": True}), PAYLOAD, "bad_version"),
    ("codec zstd", msgpack.packb({**FIELDS, "codec": "zstd"}), PAYLOAD, "bad_codec"),
    ("codec as bin", msgpack.packb({**FIELDS, "codec": b"raw"}), PAYLOAD, "bad_codec"),
    ("cam int", msgpack.packb({**FIELDS, "cam": 5}), PAYLOAD, "bad_field"),
    ("cam empty", msgpack.packb({**FIELDS, "cam": ""}), PAYLOAD, "bad_field"),
    ("cam 257", msgpack.packb({**FIELDS, "cam": "c" * 257}), PAYLOAD, "bad_field"),
    ("seq str", msgpack.packb({**FIELDS, "seq": "x"}), PAYLOAD, "bad_field"),
    ("seq negative", msgpack.packb({**FIELDS, "seq": -1}), PAYLOAD, "bad_field"),
    ("seq 2**63", msgpack.packb({**FIELDS, "seq": 2**63}), PAYLOAD, "bad_field"),
    ("seq bool", msgpack.packb({**FIELDS, "seq": True}), PAYLOAD, "bad_field"),
    ("ts float", msgpack.packb({**FIELDS, "ts": 2.0}), PAYLOAD, "bad_field"),
    ("ts negative", msgpack.packb({**FIELDS, "ts": -5}), PAYLOAD, "bad_field"),
    ("len str", msgpack.packb({**FIELDS, "len": "12"}), PAYLOAD, "bad_field"),
    ("sum negative", msgpack.packb({**FIELDS, "sum": -1}), PAYLOAD, "bad_field"),
    ("sumk md5", msgpack.packb({**FIELDS, "sumk": "md5"}), PAYLOAD, "bad_header"),
    ("meta a list", msgpack.packb({**FIELDS, "meta": [1]}), PAYLOAD, "bad_field"),
    ("meta nil", msgpack.packb({**FIELDS, "meta": None}), PAYLOAD, "bad_field"),
    ("meta value a map", msgpack.packb({**FIELDS, "meta": {"a": {}}}), PAYLOAD, "bad_field"),
    ("bytes with shape", msgpack.packb({**_resum({**FIELDS, "codec": "bytes"}, PAYLOAD)}), PAYLOAD, "bad_header"),
    ("dtype int64", msgpack.packb({**FIELDS, "dtype": "int64"}), PAYLOAD, "bad_dtype"),
    ("shape negative", msgpack.packb({**FIELDS, "shape": [-2, -3]}), PAYLOAD, "bad_shape"),
    ("shape 9 dims", msgpack.packb({**FIELDS, "shape": [1] * 9}), PAYLOAD, "bad_shape"),
    ("shape 2**31", msgpack.packb({**FIELDS, "shape": [2**31, 0]}), PAYLOAD, "bad_shape"),
    ("shape of str", msgpack.packb({**FIELDS, "shape": ["2", "3"]}), PAYLOAD, "bad_shape"),
    ("raw len against shape", msgpack.packb(_resum({**FIELDS, "shape": [3, 3]}, PAYLOAD)), PAYLOAD, "bad_shape"),
    ("truncated", msgpack.packb(FIELDS), PAYLOAD[:-1], "truncated"),
    ("longer", msgpack.packb(FIELDS), PAYLOAD + b"\x00", "bad_length"),
    ("checksum", msgpack.packb({**FIELDS, "sum": FIELDS["sum"] ^ 1}), PAYLOAD, "bad_checksum"),
    ("lz4 no prefix", msgpack.packb(_resum(LZ4_FIELDS, b"\x01\x02")), b"\x01\x02", "bad_payload"),
    ("lz4 prefix", msgpack.packb(_resum(LZ4_FIELDS, _bad_prefix)), _bad_prefix, "bad_shape"),
    ("lz4 block", msgpack.packb(_resum(LZ4_FIELDS, _bad_block)), _bad_block, "bad_payload"),
]


def test_the_service_rejects_what_the_page_rejects_with_the_same_reason(stream: str, client: redis.Redis) -> None:
    queue = RedisStreamsQueue(REDIS_URL, QueueSettings(stream=stream, groups=("g",)))
    for name, header, payload, reason in SINGLE_DEFECTS:
        with pytest.raises(Rejected) as rejected:
            third_party.decode(header, payload)
        assert rejected.value.reason == reason, name
        fields = {k: v for k, v in (("h", header), ("p", payload), ("name", name.encode())) if v is not None}
        client.xadd(stream, fields)
    header, payload = third_party.encode("last", 0, 0, b"valid")
    client.xadd(stream, {"h": header, "p": payload})
    assert [d.frame.camera for d in drain(queue, 1)] == ["last"]
    letters = queue.dead_letters(count=1000)
    assert len(letters) == len(SINGLE_DEFECTS)
    got = {name: letter.reason for (name, *_), letter in zip(SINGLE_DEFECTS, letters, strict=True)}
    want = {name: reason for name, _h, _p, reason in SINGLE_DEFECTS}
    assert {n: (got[n], want[n]) for n in want if got[n] != want[n]} == {}
    queue.close()


#: Header keys that are msgpack bin, not str: the page says bad_header (the codec once took them as unknown keys).
BIN_KEYS = [
    ("bin key", msgpack.packb({**FIELDS, b"x": 1}, use_bin_type=True), PAYLOAD, "bad_header"),
    ("bin key shadowing seq", msgpack.packb({**FIELDS, b"seq": 5}, use_bin_type=True), PAYLOAD, "bad_header"),
]


@pytest.mark.parametrize(("name", "header", "payload", "reason"), BIN_KEYS, ids=[d[0] for d in BIN_KEYS])
def test_bin_keys_are_refused_by_page_and_service(name: str, header: bytes, payload: bytes, reason: str) -> None:
    with pytest.raises(Rejected, match=f"^{reason}"):
        third_party.decode(header, payload)
    with pytest.raises(ValueError, match=f"^{reason}"):
        FrameCodec().decode(header, payload)
