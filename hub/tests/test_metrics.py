"""condorlab's Prometheus metrics, as /hub/metrics serves them (prometheus_client's default registry)."""

from __future__ import annotations

import asyncio

from condorlab import metrics
from condorlab.jobs import JobStatusCache
from prometheus_client import REGISTRY, generate_latest


def sample(name: str, labels: dict | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


def test_the_queue_view_is_exported_by_state_and_group():
    queue = [
        {"ClusterId": 1, "ProcId": 0, "JobStatus": 2, "CondorlabGroup": "physics"},
        {"ClusterId": 2, "ProcId": 0, "JobStatus": 2, "CondorlabGroup": "physics"},
        {"ClusterId": 3, "ProcId": 0, "JobStatus": 1, "CondorlabGroup": "astro"},
    ]
    slots = [{"Machine": "wn1", "Cpus": 3, "Memory": 1024, "TotalSlotCpus": 4, "TotalSlotMemory": 2048}]
    cache = JobStatusCache(lambda: queue, share_query=lambda: slots)
    shared = metrics._collector.cache
    metrics.register(cache)
    asyncio.run(cache.refresh())
    assert sample("condorlab_sessions", {"state": "running", "group": "physics"}) == 2
    assert sample("condorlab_sessions", {"state": "idle", "group": "astro"}) == 1
    assert sample("condorlab_share_cpus", {"kind": "free"}) == 3
    assert sample("condorlab_share_cpus", {"kind": "total"}) == 4
    assert sample("condorlab_schedd_up") == 1 and sample("condorlab_share_known") == 1
    assert b"condorlab_sessions{" in generate_latest(REGISTRY)
    metrics.register(shared)


def test_schedd_failures_and_query_times_are_counted():
    before = sample("condorlab_schedd_query_failures_total") or 0
    timed = sample("condorlab_schedd_query_seconds_count") or 0

    def broken():
        raise RuntimeError("schedd down")

    asyncio.run(JobStatusCache(broken).refresh())
    asyncio.run(JobStatusCache(lambda: []).refresh())
    assert sample("condorlab_schedd_query_failures_total") == before + 1
    assert sample("condorlab_schedd_query_seconds_count") == timed + 1


def test_the_schedd_s_health_is_unknown_until_asked_and_kept_fresh_after():
    asked = []
    cache = JobStatusCache(lambda: asked.append(1) or [], max_age=0)
    shared = metrics._collector.cache
    metrics.register(cache)
    try:
        assert sample("condorlab_schedd_up") is None, "absent, not 0, before the first query"

        async def scenario():
            cache.keep_fresh(0.01)
            cache.keep_fresh(0.01)  # one keeper only
            await asyncio.sleep(0.1)
            cache._keeper.cancel()

        asyncio.run(scenario())
        assert len(asked) >= 3 and sample("condorlab_schedd_up") == 1
    finally:
        metrics.register(shared)
