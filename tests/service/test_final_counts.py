"""The parent's counts of its worker processes are exact once it has stopped: each child reports its final
counters on the status pipe after its drain, so frames acked between the parent's last read of a child's
/metrics and the child's exit are counted too (``soak`` and the bench audit these totals).

The service runs in this test's process (sources and producer here, workers in one child), as ``soak`` runs it.
"""

from __future__ import annotations

import redis

from frame_buffer import metrics_merge
from frame_buffer.config import Settings
from frame_buffer.service import Service
from tests.conftest import REDIS_URL
from tests.servers import wait_until


def _acked(families: metrics_merge.Families) -> float:
    return sum(sample.value for family in families if family.name == "frame_queue_acked"
               for sample in family.samples if sample.name == "frame_queue_acked_total")


def test_after_the_stop_the_parent_counts_every_frame_its_worker_process_acked(stream_name: str) -> None:
    settings = Settings(stream=stream_name, redis_url=REDIS_URL, sources=("synthetic:cam0:fps=500:size=64x48",),
                        worker_processes=1, workers=2, http_host="127.0.0.1", http_port=0, group="final")
    client = redis.Redis.from_url(REDIS_URL)
    service = Service(settings)
    try:
        before = _acked(service.metric_families())
        service.start()
        wait_until(lambda: _acked(service.metric_families(refresh=True)) - before >= 500, 60,
                   "500 frames acked in the worker process")
    finally:
        code = service.stop()
    try:
        assert code == 0
        published = service.producer.summary()["published"] if service.producer else 0
        (group,) = client.xinfo_groups(stream_name)
        assert client.xpending(stream_name, "final")["pending"] == 0
        # Every published frame was acked in the child (and counted here) or is still in the stream.
        assert _acked(service.metric_families()) - before + group["lag"] == published
    finally:
        client.delete(stream_name, f"{stream_name}:dlq")
        client.close()
