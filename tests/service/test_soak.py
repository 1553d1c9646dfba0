"""A short soak, as CI runs it: everything together, nothing missing, memory flat."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FRAME_BUFFER = str(Path(sys.executable).with_name("frame-buffer"))


def test_short_soak_loses_nothing_and_memory_stays_flat() -> None:
    result = subprocess.run(
        [FRAME_BUFFER, "soak", "--duration", "12", "--interval", "2", "--size", "64x48", "--fps", "50",
         "--cameras", "2", "--json"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout.strip().splitlines()[-1])
    print({k: v for k, v in verdict.items() if k != "samples"})
    assert verdict["missing"] == 0 and verdict["pending"] == 0 and verdict["clean_stop"] is True
    assert verdict["published"] >= 500, "the sources did not run"
    assert verdict["published"] == verdict["acked"] + verdict["left_in_queue"]
    assert len(verdict["samples"]) >= 5
    assert all(sample["rss_mb"] > 0 for sample in verdict["samples"])
    counted = {row["stage"]: row["frames"] for row in verdict["stages"]}
    assert counted["publish"] == verdict["published"] and counted["ack"] == verdict["acked"], counted
    assert all(counted[stage] > 0 for stage in ("buffer", "capture_to_receive", "decode", "handler")), counted
    assert "where the time goes" in result.stdout
