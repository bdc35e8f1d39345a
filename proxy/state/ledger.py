"""Shared counters as one replica sees them: last-read totals plus its own unsent deltas.

Every counter lives in a hash (`hybridgate:spend:2026-12`, field `team-a|api_nano`).
A replica's view of a counter is what the store said at the last sync plus what this
replica has added since and the store has not yet acknowledged. Deltas move through
three stages: `pending` (being added to), `inflight` (frozen, sent with a sequence
number, retried unchanged until acknowledged), then gone (folded into `cache` by the
store's answer). Because the store's answer to a flush already includes that flush,
nothing is ever counted twice or dropped, however often a flush is retried.

All of it is plain dict arithmetic: O(1) per add or read, no I/O, no locks (one event
loop owns it).
"""

from __future__ import annotations

Counts = dict[str, dict[str, int]]


class Ledger:
    __slots__ = ("cache", "events_unsynced", "inflight", "inflight_events", "local", "pending",
                 "seq")  # fmt: skip

    def __init__(self) -> None:
        self.cache: Counts = {}  # totals as last read from the store
        self.local: Counts = {}  # pending + inflight, kept summed for O(1) reads
        self.pending: Counts = {}
        self.inflight: Counts | None = None
        self.seq = 0  # sequence number of the current (or last) inflight batch
        self.events_unsynced = 0
        self.inflight_events = 0

    def add(self, h: str, field: str, n: int) -> None:
        if not n:
            return
        p = self.pending.get(h)
        if p is None:
            p = self.pending[h] = {}
        p[field] = p.get(field, 0) + n
        loc = self.local.get(h)
        if loc is None:
            loc = self.local[h] = {}
        loc[field] = loc.get(field, 0) + n

    def value(self, h: str, field: str) -> int:
        """This replica's best knowledge of a counter: store total + its own unsent adds."""
        c = self.cache.get(h)
        loc = self.local.get(h)
        return (c.get(field, 0) if c else 0) + (loc.get(field, 0) if loc else 0)

    def take(self) -> tuple[int, Counts] | None:
        """The batch to send: the unacknowledged one again (same seq), else pending frozen."""
        if self.inflight is None:
            if not self.pending:
                return None
            self.inflight, self.pending = self.pending, {}
            self.inflight_events, self.events_unsynced = self.events_unsynced, 0
            self.seq += 1
        return self.seq, self.inflight

    def ack(self, totals: Counts) -> None:
        """The store applied the inflight batch (if any) and answered with these totals."""
        if self.inflight is not None:
            for h, fields in self.inflight.items():
                loc = self.local[h]
                for f, n in fields.items():
                    left = loc[f] - n
                    if left:
                        loc[f] = left
                    else:
                        del loc[f]
                if not loc:
                    del self.local[h]
            self.inflight = None
            self.inflight_events = 0
        for h, fields in totals.items():
            self.cache[h] = fields

    def drop_pending(self, h: str) -> None:
        """Forget unsent deltas of a hash nobody will read (a rate window long over)."""
        fields = self.pending.pop(h, None)
        if not fields:
            return
        loc = self.local[h]
        for f, n in fields.items():
            left = loc[f] - n
            if left:
                loc[f] = left
            else:
                del loc[f]
        if not loc:
            del self.local[h]

    def prune(self, live: set[str]) -> None:
        """Forget cached hashes nobody reads any more (past windows and months)."""
        for h in [h for h in self.cache if h not in live]:
            del self.cache[h]

    @property
    def unsynced(self) -> int:
        """Events whose deltas the store has not acknowledged yet."""
        return self.events_unsynced + self.inflight_events
