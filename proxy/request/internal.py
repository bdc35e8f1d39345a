"""A request the proxy makes of itself (a batch line): who it is for, and where it may go.

The Handler serves it like any other (rules, router, failover, metering), but the caller
is known already (no key to check, no concurrency cap: the caller paces itself), the
event is marked with its kind, and the caller decides what to do with the finished event
(a line refused before any upstream saw it is retried, not metered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from proxy.metering.events import UsageEvent
from proxy.request.auth import Principal


@dataclass(slots=True)
class InternalCall:
    principal: Principal
    kind: str  # UsageEvent.kind
    only: Literal["self_hosted", "api"] | None  # like a rule's `only`
    finish: Callable[[UsageEvent], None]  # instead of meter.finish: the caller's to call
