"""One Prometheus histogram read off a process's /metrics, and what it saw between two
readings: the benchmark's view of a time it cannot measure from the client.

    before = scrape(url, "disbursement_latency_seconds"); ...run...
    seen = scrape(url, "disbursement_latency_seconds") - before
    seen.count, seen.mean_s(), seen.quantile_bound_s(0.99)

A drawdown answers `disbursing`; the money reaches the card when the relay has paid it,
and only the relay's histogram knows when that was. A setting that speeds the answers
may slow the money (the relay's CPU priority, say), so the bench reports both. The
quantile is the upper bound of the bucket it falls in: as coarse as the buckets, which
is why the mean is given beside it.
"""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class HistogramReading:
    """Cumulative counts by upper bound (`+Inf` last), the count and the sum, summed over
    the histogram's label sets."""

    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0
    total_s: float = 0.0

    def __sub__(self, earlier: HistogramReading) -> HistogramReading:
        if self.count < earlier.count:  # the process restarted in between: since then
            return self
        return HistogramReading(
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.count - earlier.count,
            self.total_s - earlier.total_s,
        )

    def mean_s(self) -> float:
        return self.total_s / self.count if self.count else math.nan

    def quantile_bound_s(self, fraction: float) -> float:
        """The upper bound of the bucket holding the `fraction` quantile (NaN if empty)."""
        if not self.count:
            return math.nan
        for le in sorted(self.buckets):
            if self.buckets[le] >= fraction * self.count:
                return le
        return math.inf


def parse(text: str, name: str) -> HistogramReading:
    """The histogram `name` in a /metrics text; empty if the text has none."""
    buckets: dict[float, float] = {}
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == f"{name}_count":
                count += sample.value
            elif sample.name == f"{name}_sum":
                total += sample.value
    return HistogramReading(buckets, count, total)


def scrape(url: str, name: str) -> HistogramReading:
    """`parse` of `url`'s answer; empty if the process does not answer (not running)."""
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as answer:
            text = answer.read().decode("utf-8")
    except OSError:
        return HistogramReading()
    return parse(text, name)
