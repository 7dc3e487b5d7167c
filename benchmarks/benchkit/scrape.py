"""Reading a runtime's Prometheus metrics during a benchmark."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape(url: str) -> list[Sample]:
    """Every sample ``url``/metrics exposes now."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [item for family in text_string_to_metric_families(text) for item in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` that carry ``labels`` (0 when there are none)."""
    return sum(
        item.value
        for item in samples
        if item.name == name and all(item.labels.get(k) == v for k, v in labels.items())
    )


def batch_totals(url: str) -> tuple[float, float]:
    """(model calls, rows) so far, from the runtime's mlmodel_batch_size histogram."""
    samples = scrape(url)
    return total(samples, "mlmodel_batch_size_count"), total(samples, "mlmodel_batch_size_sum")
