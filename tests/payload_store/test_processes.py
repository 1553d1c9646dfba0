"""The store across real processes: a producer SIGKILLed mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from frame_buffer.codec import PayloadRef
from frame_buffer.payload_store import PayloadLost, StoreReader, StoreWriter

ROOT = Path(__file__).resolve().parents[2]


def test_a_producer_killed_mid_write_leaves_committed_frames_readable_and_the_half_slot_refused(
    store_dir: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'service'}{os.pathsep}{ROOT}"}
    child = subprocess.Popen([sys.executable, "-m", "tests.payload_store.writer_process", str(store_dir)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    assert child.stdout is not None
    committed = PayloadRef(*json.loads(child.stdout.readline()))
    half = PayloadRef(*json.loads(child.stdout.readline()))
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    reader = StoreReader(store_dir)
    assert bytes(reader.view(committed)) == b"\x11" * 4096
    with pytest.raises(PayloadLost, match="never committed"):
        reader.view(half)
    # The kernel dropped the dead writer's lock: a new producer starts, in a segment of its own.
    writer = StoreWriter(store_dir, 1 << 20)
    assert writer.segment != committed.segment
    assert bytes(reader.view(committed)) == b"\x11" * 4096
    writer.close()
