"""`hybridgate serve --workers N`: N worker processes on one listening socket, one set of books.

Design ("one record, many readers", across processes):
- the supervisor binds the socket, creates each GPU pool's shared books
  (metering/shared_gpu.py), runs the *hub* (a full HybridGateApp on a private unix
  socket: every sink, every operator route) and starts, restarts and stops the workers;
- a worker serves the OpenAI routes itself (auth, budgets, routing, failover, relay,
  pricing, GPU shares on the shared books) and forwards each finished, priced UsageEvent
  to the hub in batches from a background task, never from the request path; any other
  route (metrics, reports, dashboard, admin, readiness) is relayed to the hub.
So Prometheus, the windowed cost model, the state store and the request log each see
every event exactly once, in one process, whichever worker served it.
"""

from __future__ import annotations

from proxy.multiproc.supervisor import serve_workers, workers_problems

__all__ = ["serve_workers", "workers_problems"]
