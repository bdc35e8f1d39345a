"""Fault knobs: what is broken right now, and whether this request meets it.

The JSON of `POST /sim/faults` merges into the current faults (null removes a key);
`DELETE /sim/faults` clears them all. Keys:

    status              int    HTTP status for inference requests (429, 500, 503, 529, ...)
    probability         float  chance each request gets `status` (default 1.0)
    count               int    only the next N requests get `status`, then it clears
    retry_after         float  seconds, sent as `retry-after` with the error
    error_type          str    error `type` (default: from status and mode)
    error_code          str|int error `code` (default: the status for vLLM, by status for api)
    error_message       str    error `message`
    error_shape         str    vllm | vllm_flat | openai | anthropic (default: the mode's)
    slow_first_token_s  float  extra wall seconds before a request reaches the engine
    cut_stream_after    int    close a stream's connection after this many SSE events
    health_503          bool   GET /health answers 503
    refuse_connections  bool   stop listening on the main port
    refuse_for_s        float  with refuse_connections: listen again after this long

Times here are wall seconds, not divided by --speed. Error faults apply to inference
requests (POST /v1/...) only, before the body is read; they still appear in /sim/stats.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Any

SHAPES = ("vllm", "vllm_flat", "openai", "anthropic")


class FaultError(ValueError):
    """A /sim/faults body that does not make sense; the message says why."""


@dataclass
class Faults:
    status: int | None = None
    probability: float = 1.0
    count: int | None = None
    retry_after: float | None = None
    error_type: str | None = None
    error_code: str | int | None = None
    error_message: str | None = None
    error_shape: str | None = None
    slow_first_token_s: float | None = None
    cut_stream_after: int | None = None
    health_503: bool = False
    refuse_connections: bool = False
    refuse_for_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_TYPES: dict[str, tuple[type, ...]] = {
    "status": (int,),
    "probability": (int, float),
    "count": (int,),
    "retry_after": (int, float),
    "error_type": (str,),
    "error_code": (str, int),
    "error_message": (str,),
    "error_shape": (str,),
    "slow_first_token_s": (int, float),
    "cut_stream_after": (int,),
    "health_503": (bool,),
    "refuse_connections": (bool,),
    "refuse_for_s": (int, float),
}
_DEFAULTS = Faults().to_json()


class FaultState:
    """The live faults plus the random source that decides probabilistic ones."""

    def __init__(self, seed: int = 0) -> None:
        self.current = Faults()
        self._rng = random.Random(seed)

    def update(self, changes: dict[str, Any]) -> Faults:
        if not isinstance(changes, dict):
            raise FaultError("faults must be a JSON object")
        unknown = sorted(set(changes) - set(_TYPES))
        if unknown:
            raise FaultError(
                f"unknown fault keys: {', '.join(unknown)}; known: {', '.join(_TYPES)}"
            )
        merged = self.current.to_json()
        for key, value in changes.items():
            if value is None:
                merged[key] = _DEFAULTS[key]
                continue
            ok = _TYPES[key]
            if isinstance(value, bool) and bool not in ok:
                raise FaultError(f"{key}: expected {ok[0].__name__}, got a boolean")
            if not isinstance(value, ok):
                raise FaultError(f"{key}: expected {ok[0].__name__}, got {value!r}")
            merged[key] = value
        if merged["status"] is not None and not 100 <= merged["status"] <= 599:
            raise FaultError(f"status: {merged['status']} is not an HTTP status")
        if not 0.0 <= merged["probability"] <= 1.0:
            raise FaultError("probability: must be within [0, 1]")
        if merged["error_shape"] is not None and merged["error_shape"] not in SHAPES:
            raise FaultError(f"error_shape: one of {', '.join(SHAPES)}")
        for key in ("count", "cut_stream_after"):
            if merged[key] is not None and merged[key] < 0:
                raise FaultError(f"{key}: must be >= 0")
        self.current = Faults(**merged)
        return self.current

    def clear(self) -> None:
        self.current = Faults()

    def pick_error(self) -> Faults | None:
        """The error fault this request meets, if any (consumes one of `count`)."""
        f = self.current
        if f.status is None:
            return None
        if f.count is not None:
            if f.count <= 0:
                return None
            f.count -= 1
            hit = replace(f)
            if f.count == 0:
                f.status = f.count = None
            return hit
        if f.probability >= 1.0 or self._rng.random() < f.probability:
            return f
        return None
