"""The simulator's books, served at GET /sim/stats: the truth metering is checked against.

Counters are totals since the last reset; the per-request list and the request log
keep the most recent `max_records` entries. Timestamps are Unix seconds, so a test
can compare them with its own `time.time()`. Shape (`?detail=0` omits the two lists):

    mode, since, now, requests_total, requests_by_endpoint {path: n},
    responses_by_status {"200": n}, cancelled, cut, busy_seconds, gpu_seconds_total,
    prompt_tokens_total, completion_tokens_total, running, waiting,
    requests: [{id, endpoint, model, stream, status, fault, prompt_tokens, cached_tokens,
                cache_creation_tokens, completion_tokens, gpu_seconds, cancelled, cut, arrived,
                started, first_token, finished}],
    request_log: [{t, method, path, status}]

`requests_total` and the log count every request except /sim/*; `requests` lists
inference requests only (POST /v1/...), faulted and rejected ones included. A status
of 499 means the client left before any status was sent.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from simulator.engine import EngineLike, Sequence


class Record:
    """One inference request, whatever happened to it."""

    __slots__ = (
        "arrived",
        "body",
        "cache_creation_tokens",
        "cancelled",
        "cut",
        "endpoint",
        "fault",
        "id",
        "model",
        "seq",
        "status",
        "stream",
    )

    def __init__(self, id: str, endpoint: str, arrived: float) -> None:
        self.id = id
        self.endpoint = endpoint
        self.arrived = arrived
        self.model: str | None = None
        self.stream = False
        self.status: int | None = None
        self.fault = False
        self.cancelled = False
        self.cut = False
        self.seq: Sequence | None = None
        self.cache_creation_tokens = 0  # anthropic mode: prompt tokens written to the cache
        self.body: Any = None  # --record-bodies: the messages / input items received

    def to_json(self) -> dict[str, Any]:
        seq = self.seq
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "model": self.model,
            "stream": self.stream,
            "status": self.status,
            "fault": self.fault,
            "prompt_tokens": seq.prompt_tokens if seq else 0,
            "cached_tokens": seq.cached_tokens if seq else 0,
            "cache_creation_tokens": self.cache_creation_tokens,
            "completion_tokens": seq.completion_tokens if seq else 0,
            "gpu_seconds": seq.gpu_seconds if seq else 0.0,
            "cancelled": self.cancelled,
            "cut": self.cut,
            "arrived": self.arrived,
            "started": seq.started if seq else None,
            "first_token": seq.first_token if seq else None,
            "finished": seq.finished if seq else None,
            **({"body": self.body} if self.body is not None else {}),
        }


class Stats:
    def __init__(self, max_records: int = 100_000) -> None:
        self.max_records = max_records
        self.reset()

    def reset(self, keep: list[Record] | None = None) -> None:
        self.since = time.time()
        self.requests_total = 0
        self.by_endpoint: dict[str, int] = {}
        self.by_status: dict[str, int] = {}
        self.cancelled = 0
        self.cut = 0
        self.records: deque[Record] = deque(keep or (), maxlen=self.max_records)
        self.log: deque[list[Any]] = deque(maxlen=self.max_records)

    def arrive(self, method: str, path: str) -> list[Any]:
        """Log an arrival; the returned entry gets its status when the response is known."""
        self.requests_total += 1
        self.by_endpoint[path] = self.by_endpoint.get(path, 0) + 1
        entry = [time.time(), method, path, None]
        self.log.append(entry)
        return entry

    def respond(self, entry: list[Any], status: int) -> None:
        entry[3] = status
        key = str(status)
        self.by_status[key] = self.by_status.get(key, 0) + 1

    def record(self, id: str, endpoint: str, arrived: float) -> Record:
        rec = Record(id, endpoint, arrived)
        self.records.append(rec)
        return rec

    def in_flight(self) -> list[Record]:
        return [r for r in self.records if r.seq is not None and not r.seq.done]

    def to_json(self, engine: EngineLike, mode: str, detail: bool = True) -> dict[str, Any]:
        records = [r.to_json() for r in self.records]
        out: dict[str, Any] = {
            "mode": mode,
            "since": self.since,
            "now": time.time(),
            "requests_total": self.requests_total,
            "requests_by_endpoint": dict(self.by_endpoint),
            "responses_by_status": dict(self.by_status),
            "cancelled": self.cancelled,
            "cut": self.cut,
            "busy_seconds": engine.busy_seconds,
            "gpu_seconds_total": sum(r["gpu_seconds"] for r in records),
            "prompt_tokens_total": sum(r["prompt_tokens"] for r in records),
            "completion_tokens_total": sum(r["completion_tokens"] for r in records),
            "running": engine.num_running,
            "waiting": engine.num_waiting,
        }
        if detail:
            out["requests"] = records
            out["request_log"] = [
                {"t": t, "method": m, "path": p, "status": s} for t, m, p, s in self.log
            ]
        return out
