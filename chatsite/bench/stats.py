"""Mergeable latency histograms and the summaries the report prints."""

from collections import Counter
from collections.abc import Iterable, Mapping

# 0.1 ms buckets: finer than anything the report rounds to, and a client process sends
# a few thousand counts to the orchestrator instead of every sample.
BUCKET_MS = 0.1


class Histogram:
    """Counts of values in BUCKET_MS buckets; percentiles are read from bucket upper bounds."""

    def __init__(self, counts: Mapping[int | str, int] | None = None) -> None:
        self.counts: Counter[int] = Counter({int(bucket): count for bucket, count in (counts or {}).items()})

    def add(self, value_ms: float) -> None:
        self.counts[int(value_ms / BUCKET_MS)] += 1

    def update(self, values_ms: Iterable[float]) -> None:
        for value in values_ms:
            self.add(value)

    def merge(self, other: "Histogram") -> None:
        self.counts.update(other.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, fraction: float) -> float | None:
        """Return the value below which `fraction` of the samples lie (None without samples)."""
        total = self.total
        if not total:
            return None
        rank = fraction * total
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return round((bucket + 1) * BUCKET_MS, 1)
        return round((max(self.counts) + 1) * BUCKET_MS, 1)

    def summary(self) -> dict[str, float | int | None]:
        total = self.total
        mean = (
            sum((bucket + 0.5) * BUCKET_MS * count for bucket, count in self.counts.items()) / total if total else None
        )
        return {
            "samples": total,
            "p50": self.percentile(0.50),
            "p95": self.percentile(0.95),
            "p99": self.percentile(0.99),
            "max": round((max(self.counts) + 1) * BUCKET_MS, 1) if total else None,
            "mean": round(mean, 1) if mean is not None else None,
        }

    def to_json(self) -> dict[str, int]:
        return {str(bucket): count for bucket, count in self.counts.items()}


def timing_summary(values_ms: list[float]) -> dict[str, float | int | None]:
    """Summarise a short list of timings (a few dozen runs) exactly."""
    if not values_ms:
        return {"runs": 0, "p50": None, "p95": None, "min": None, "max": None}
    ordered = sorted(values_ms)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)

    return {
        "runs": len(ordered),
        "p50": at(0.5),
        "p95": at(0.95),
        "min": round(ordered[0], 2),
        "max": round(ordered[-1], 2),
    }
