"""The bench's reading of a histogram off /metrics (loadtest/histogram_scrape.py)."""

from __future__ import annotations

import math
import socket

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtest.histogram_scrape import HistogramReading, parse, scrape

NAME = "disbursement_latency_seconds"


def _text(observed: dict[str, list[float]]) -> str:
    """What a process exposes after these observations, by label value."""
    registry = CollectorRegistry()
    histogram = Histogram(NAME, "t", ["lane"], buckets=(0.1, 0.25, 0.5), registry=registry)
    for lane, values in observed.items():
        for value in values:
            histogram.labels(lane).observe(value)
    return generate_latest(registry).decode()


def test_a_reading_sums_label_sets_and_a_difference_is_what_was_seen_between() -> None:
    before = parse(_text({"a": [0.05], "b": [0.3]}), NAME)
    after = parse(_text({"a": [0.05, 0.05, 0.2], "b": [0.3, 0.3, 0.05, 0.05]}), NAME)
    assert (before.count, after.count) == (2, 7)
    seen = after - before
    assert seen.count == 5
    assert math.isclose(seen.total_s, 0.05 + 0.2 + 0.3 + 0.05 + 0.05)
    assert math.isclose(seen.mean_s(), 0.13)
    assert seen.buckets == {0.1: 3, 0.25: 4, 0.5: 5, math.inf: 5}
    # The bucket holding the quantile: 3 of 5 at or under 0.1 s, 4 under 0.25 s.
    assert seen.quantile_bound_s(0.6) == 0.1
    assert seen.quantile_bound_s(0.7) == 0.25
    assert seen.quantile_bound_s(0.99) == 0.5
    restarted = parse(_text({"a": [0.2]}), NAME)  # its counters began again
    assert (restarted - after).count == 1


def test_nothing_seen_or_no_such_histogram_or_no_process_reads_as_empty() -> None:
    assert parse(_text({"a": [0.05]}), "other_seconds") == HistogramReading()
    assert math.isnan(HistogramReading().mean_s())
    assert math.isnan(HistogramReading().quantile_bound_s(0.99))
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert scrape(f"http://127.0.0.1:{port}/metrics", NAME) == HistogramReading()
