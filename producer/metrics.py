"""Prometheus metrics of a publishing process, read from the Publisher's own totals at scrape time.

Reading at scrape time keeps the publish path free of metric calls, and the numbers can never disagree
with what the publisher itself reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from producer.buffer import OLDEST, SUPERSEDED
from producer.publisher import Publisher


class PublisherCollector(Collector):
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def collect(self) -> Iterator[Metric]:
        p = self._publisher
        yield CounterMetricFamily(
            "odds_producer_published", "Entries that reached Redis", value=p.total_published
        )
        yield CounterMetricFamily(
            "odds_producer_overflowed",
            "Entries dropped because the buffer was full",
            value=p.total_overflowed,
        )
        dropped = CounterMetricFamily(
            "odds_producer_dropped", "Entries the full buffer dropped, by what it gave up", labels=["reason"]
        )
        for reason in (SUPERSEDED, OLDEST):
            dropped.add_metric([reason], p.core.buffer.dropped[reason])
        yield dropped
        yield CounterMetricFamily(
            "odds_producer_entries_forced_trimmed",
            "Unacknowledged entries deleted to hold the hard cap (data loss)",
            value=p.total_forced_trimmed,
        )
        yield GaugeMetricFamily(
            "odds_producer_buffered_entries", "Entries waiting for Redis to come back", value=p.buffered
        )
        held = GaugeMetricFamily(
            "odds_producer_held_back",
            "1 while the producer holds entries back, labelled with why: a Redis condition or high_water",
            labels=["reason"],
        )
        if p.core.held_back is not None:
            held.add_metric([p.core.held_back], 1)
        yield held


def registry_for(publisher: Publisher) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(PublisherCollector(publisher))
    return registry


def serve(publisher: Publisher, port: int, addr: str = "0.0.0.0") -> WSGIServer:
    """Serve /metrics on a background thread; shut the returned server down to stop."""
    server, _ = start_http_server(port, addr=addr, registry=registry_for(publisher))
    return server
