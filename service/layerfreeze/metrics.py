"""Prometheus metrics of one service instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _StateCollector(Collector):
    """Gauges read at scrape time: jobs by status (from the store), queue depth and workers."""

    def __init__(self, jobs_by_status: Callable[[], dict[str, int]], pool: Callable[[], object]) -> None:
        self._jobs = jobs_by_status
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("layerfreeze_jobs", "Jobs in the store by status", labels=["status"])
        for status, n in self._jobs().items():
            jobs.add_metric([status], n)
        yield jobs
        health = self._pool()
        for name, doc in (("queued", "Jobs waiting for a worker"), ("alive", "Worker processes alive"),
                          ("busy", "Workers running a job"), ("workers", "Worker processes configured")):
            g = GaugeMetricFamily(f"layerfreeze_pool_{name}", doc)
            g.add_metric([], getattr(health, name))
            yield g


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_finished = Counter("layerfreeze_jobs_finished", "Jobs finished", ["status"], registry=r)
        self.job_duration = Histogram(
            "layerfreeze_job_duration_seconds", "Run time of a job in its worker", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.bytes_in = Counter("layerfreeze_upload_bytes", "Bytes of model uploads received", registry=r)
        self.bytes_out = Counter("layerfreeze_download_bytes", "Bytes of artifacts sent", registry=r)
        self.worker_restarts = Counter("layerfreeze_worker_restarts", "Worker processes replaced",
                                       ["reason"], registry=r)
        self.requests = Counter("layerfreeze_http_requests", "HTTP requests answered",
                                ["method", "status"], registry=r)

    def watch(self, jobs_by_status: Callable[[], dict[str, int]], pool: Callable[[], object]) -> None:
        self.registry.register(_StateCollector(jobs_by_status, pool))
