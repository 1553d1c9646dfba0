"""The bench's service-path summary: a run that lost frames is shown and not counted (no servers needed; the
real run is in test_commands.py)."""

from __future__ import annotations

import io

from frame_buffer import metrics_merge
from frame_buffer.commands import stages
from frame_buffer.commands.bench import service_path
from frame_buffer.commands.bench.service_path import ServiceRun

LAYOUT = {"frame": "184x184", "frame_bytes": 101568, "rate": 1000.0, "seconds": 3.0, "worker_processes": 1,
          "workers": 2}


def run(p99: float, *, acked: int = 100, backend_p99: float = 1.0) -> ServiceRun:
    return ServiceRun(p50_ms=p99 / 2, p99_ms=p99, frames=90, published=100, acked=acked, dropped=0, left=0,
                      clean_stop=True, backend_p50_ms=0.5, backend_p99_ms=backend_p99, raw_p50_ms=0.4,
                      raw_p99_ms=0.9, stages=[{"stage": "buffer", "frames": 90, "p50_ms": 0.1, "p99_ms": 0.2,
                                               "mean_ms": 0.1}])


def test_a_run_that_lost_frames_is_reported_and_left_out_of_best_and_median() -> None:
    runs = [run(3.0, backend_p99=2.0), run(0.5, acked=99), run(4.0, backend_p99=1.0)]
    data = service_path.summary(runs, LAYOUT)
    assert data["failed_audits"] == 1
    assert [r["audited"] for r in data["runs"]] == [True, False, True] and data["runs"][1]["lost"] == 1
    assert data["cases"]["service path"] == {"best_p50_ms": 1.5, "best_p99_ms": 3.0, "median_p99_ms": 3.5}
    # The backend-only and raw runs alternated with the failed one are still measurements of their own.
    assert data["cases"]["backend only"]["median_p99_ms"] == 1.0
    assert data["median_ratio_to_backend"] == 2.75  # 3.0 / 2.0 and 4.0 / 1.0
    out = io.StringIO()
    service_path.print_summary(data, out)
    text = out.getvalue()
    assert "FAILED" in text and "not counted: lost 1, dropped 0" in text and "by stage:" in text


def test_no_audited_run_gives_no_figures_rather_than_the_lost_ones() -> None:
    data = service_path.summary([run(0.5, acked=0)], LAYOUT)
    assert data["cases"]["service path"] == {"best_p50_ms": None, "best_p99_ms": None, "median_p99_ms": None}
    assert data["stages"] == [] and data["median_ratio_to_backend"] is None
    service_path.print_summary(data, io.StringIO())


def test_stages_snapshot_reads_merged_families() -> None:
    text = ('# TYPE frame_queue_stage_seconds histogram\n'
            'frame_queue_stage_seconds_bucket{stage="ack",le="0.001"} 3.0\n'
            'frame_queue_stage_seconds_bucket{stage="ack",le="+Inf"} 4.0\n'
            'frame_queue_stage_seconds_sum{stage="ack"} 0.5\n'
            'frame_queue_stage_seconds_count{stage="ack"} 4.0\n')
    child = metrics_merge.parse(text)
    snapshot = stages.snapshot(metrics_merge.add(child, child))
    assert snapshot["ack"].buckets == [(0.001, 6.0), (float("inf"), 8.0)] and snapshot["ack"].total_s == 1.0
    assert snapshot["decode"].count == 0
