"""Reading a Prometheus text page in tests, with prometheus_client's own parser.

One reader for every test (the proxy's `/metrics`, the simulator's and llama-server's
engine metrics), so no test trusts a hand-written regex about label quoting or escapes.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator

import httpx
from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, dict[str, str], float]


def parse_samples(text: str) -> list[Sample]:
    """Every sample of the page as (name, labels, value), in page order."""
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def sample_key(name: str, labels: dict[str, str]) -> str:
    """`name{k="v",...}` (labels in page order), or `name` when it has none."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def samples_by_key(text: str) -> dict[str, float]:
    """The page as {sample_key: value}; a labelled sample keeps its labels in the key."""
    return {sample_key(n, lab): v for n, lab, v in parse_samples(text)}


def sample_sum(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include `labels` (0 if none)."""
    return samples_sum(parse_samples(text), name, **labels)


def samples_sum(samples: list[Sample], name: str, **labels: str) -> float:
    """`sample_sum` over samples already parsed (several reads of one scrape agree)."""
    return math.fsum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


@contextlib.contextmanager
def sampled_gauge(metrics_url: str, name: str, every_s: float = 0.05) -> Iterator[list[float]]:
    """An engine's own view while the block runs: `name` (summed over its labels) read from
    `metrics_url` every `every_s` in a thread; the list fills as it goes, complete on exit."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        with httpx.Client(timeout=2) as c:
            while not stop.is_set():
                samples.append(sample_sum(c.get(metrics_url).text, name))
                stop.wait(every_s)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def busy_seconds(samples: list[float], wall: float) -> float:
    """Roughly how long the gauge was above 0 over `wall` seconds of evenly spread samples."""
    return sum(1 for s in samples if s > 0) * (wall / max(1, len(samples)))
