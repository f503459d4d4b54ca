"""condorlab's own Prometheus metrics, exported with JupyterHub's on /hub/metrics.

They live in prometheus_client's default registry, which JupyterHub's metrics
handler serves (a scrape needs a token with the read:metrics scope):

- condorlab_sessions{state, group}: session jobs in the access point's queue
  (idle, running, held, ...) per user group, from the hub's shared queue view;
- condorlab_share_cpus{kind}: the interactive share's CPUs, free and total,
  and condorlab_share_known (0 while the collector does not answer);
- condorlab_schedd_up: 1 while the last schedd query answered;
- condorlab_session_start_seconds{group}: start request to lab listening;
- condorlab_session_queue_wait_seconds{group}: submission to the job running;
- condorlab_session_start_failures_total{reason}: starts that failed;
- condorlab_session_ends_total{reason, group}: sessions that ended (reason
  idle: culled; stopped, walltime, node-lost, memory, ...);
- condorlab_schedd_query_seconds, condorlab_schedd_query_failures_total.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

START_BUCKETS = (1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)

SESSION_START_SECONDS = Histogram(
    "condorlab_session_start_seconds",
    "Seconds from a session's start request until its lab listens",
    ["group"],
    buckets=START_BUCKETS,
)
SESSION_QUEUE_WAIT_SECONDS = Histogram(
    "condorlab_session_queue_wait_seconds",
    "Seconds a session job waited in the queue until it ran",
    ["group"],
    buckets=START_BUCKETS,
)
SESSION_START_FAILURES = Counter(
    "condorlab_session_start_failures", "Session starts that failed, by reason", ["reason"]
)
SESSION_ENDS = Counter("condorlab_session_ends", "Sessions that ended, by reason and user group", ["reason", "group"])
SCHEDD_QUERY_SECONDS = Histogram(
    "condorlab_schedd_query_seconds",
    "Seconds the hub's shared query of the session jobs took",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCHEDD_QUERY_FAILURES = Counter("condorlab_schedd_query_failures", "The hub's schedd queries that failed")


class QueueCollector:
    """Gauges read at scrape time from the hub's queue and share view (no query of its own)."""

    cache = None  # the view exported (the hub's shared one)

    def collect(self):
        if self.cache is None:
            return
        sessions = GaugeMetricFamily(
            "condorlab_sessions",
            "Session jobs in the access point's queue by state and user group",
            labels=["state", "group"],
        )
        for (state, group), count in sorted(self.cache.counts().items()):
            sessions.add_metric([state, group], count)
        yield sessions
        share = self.cache.share
        cpus = GaugeMetricFamily("condorlab_share_cpus", "CPUs of the interactive share", labels=["kind"])
        cpus.add_metric(["free"], share.free_cpus)
        cpus.add_metric(["total"], share.total_cpus)
        yield cpus
        yield GaugeMetricFamily(
            "condorlab_share_known", "1 while the collector's view of the share is known", value=int(share.known)
        )
        if self.cache.queries:  # unknown (absent) until the hub has asked once
            yield GaugeMetricFamily(
                "condorlab_schedd_up", "1 while the hub's last schedd query answered", value=int(self.cache.schedd_up)
            )


_collector = QueueCollector()
REGISTRY.register(_collector)


def register(cache) -> None:
    """Export the gauges of this queue view (the hub's shared one; one view at a time)."""
    _collector.cache = cache
