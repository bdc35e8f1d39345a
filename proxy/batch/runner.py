"""One batch job, from its input file to its output and error files.

Lines run through the proxy's own request path, in process (`Handler.serve` with a
`LineExchange` and an `InternalCall`: rules, router, failover and metering as for any
request, no HTTP to itself). An alias with self-hosted targets runs its lines there only
while the targets' slots in use stay under `utilization_threshold` of their slots, at most
`max_inflight` lines at a time: a live request always finds the slots batch work left,
and a slot released goes to a waiting live request first (proxy/request/concurrency.py).
The rest goes to the alias's batch provider when the policy says so: mode `provider`, no
self-hosted progress for `forward_after_stall_s`, or `forward_at_window_fraction` of the
completion window gone.

Exactly once: a line is marked `started` before it is sent and its result recorded
(`final`) before it counts as done; a restart skips final lines, and a line started but
not final (in flight when the process died) is not sent again: it ends with the error
`batch_line_interrupted` (`batch.interrupted: rerun` sends it again instead). Lines
forwarded to a provider are recorded in the job (its `_parts`) before the upload, and a
restart finds the provider's batch by its metadata rather than submitting it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from proxy.batch.exchange import LineExchange
from proxy.batch.lines import ENDPOINTS, BadLine, Line, parse_lines
from proxy.batch.provider import TERMINAL, ProviderBatches, ProviderError
from proxy.config import BatchPolicy
from proxy.metering.events import Attempt, UsageEvent
from proxy.request.auth import Principal
from proxy.request.internal import InternalCall

if TYPE_CHECKING:
    from proxy.batch.service import BatchService

log = logging.getLogger("hybridgate.batch")

ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
_TICK_S = 0.05  # how often a waiting job looks at the pool again
_SAVE_S = 0.5  # request_counts are saved at most this often (they are rebuilt on resume)
_UNSENT = frozenset({"saturated", "dialect"})
_ENDINGS = {
    "batch_expired": "expired",
    "batch_cancelled": "cancelled",
    "batch_line_interrupted": "interrupted",
}
_EXPIRED = "This request could not be executed before the completion window expired."


def _unsent(ev: UsageEvent) -> bool:
    """Refused before any upstream saw it (rate limit, full slots, breaker): retry later."""
    return ev.status in (429, 503) and all(a.reason in _UNSENT for a in ev.attempts)


def _usage_of(body: Any) -> tuple[int, int, int]:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0, 0
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(cached or 0),
    )


class JobRunner:
    def __init__(self, service: BatchService, batch: dict[str, Any]) -> None:
        self.svc = service
        self.batch = batch
        self.id: str = batch["id"]
        self.cancel_requested = batch["status"] == "cancelling"
        self.wake = asyncio.Event()
        self.inflight: dict[str, int] = {}
        self.pending: dict[str, deque[Line]] = {}
        self.progress: dict[str, float] = {}  # alias -> when a line last started or finished
        self.lines: dict[int, Line] = {}
        self.parts: set[asyncio.Task[None]] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._saved = 0.0
        owner = batch["_owner"]
        self.principal = Principal(tenant=owner["tenant"], key_name=owner["key_name"])

    # ------------------------------------------------------------ the job

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch %s failed", self.id)

    async def _run(self) -> None:
        b, store = self.batch, self.svc.store
        try:
            content = await self.svc.read_blob(b["input_file_id"])
        except FileNotFoundError:
            await self._fail("input_file_missing", "The batch's input file is gone.")
            return
        rt = self.svc.gate.runtime
        parsed = await asyncio.to_thread(  # a large file: off the loop that serves live traffic
            parse_lines, content, b["endpoint"], frozenset(rt.config.models)
        )
        records = await store.lines(self.id)
        if b["status"] == "validating":
            b["status"] = "in_progress"
            b["in_progress_at"] = int(time.time())
        b["request_counts"]["total"] = len(parsed)
        self._recount(records)
        await self.save(force=True)
        forwarded = {i for part in b["_parts"] for i in part["indices"]}
        now = time.time()
        for item in parsed:
            rec = records.get(item.index)
            if rec is not None and rec.get("final"):
                continue
            if isinstance(item, BadLine):
                error = {"code": item.code, "message": item.message}
                await self.finish_line(item.index, item.custom_id, "other", None, error, "none")
                continue
            self.lines[item.index] = item
            if item.index in forwarded:
                continue  # its provider part reports it
            if rec is not None and rec.get("started") and self.svc.config.interrupted == "error":
                error = {
                    "code": "batch_line_interrupted",
                    "message": "The proxy stopped while this request was in flight; it was "
                    "not sent again, so that no request runs twice (batch.interrupted).",
                }
                await self.finish_line(item.index, item.custom_id, item.alias, None, error, "none")
                continue
            self.pending.setdefault(item.alias, deque()).append(item)
            self.progress.setdefault(item.alias, now)
        for part in b["_parts"]:
            if not part.get("done"):
                self._start_part(part)
        if b["status"] != "finalizing":
            await self._loop()
        await self._finalize()

    async def _loop(self) -> None:
        b = self.batch
        while True:
            if self.cancel_requested:
                await self._stop_all("batch_cancelled", "The batch was cancelled.")
                return
            now = time.time()
            if now >= b["expires_at"]:
                await self._expire()
                return
            for alias, queue in self.pending.items():
                if queue:
                    await self._dispatch(alias, queue, now)
            if not any(self.pending.values()) and not self.tasks and not self.parts:
                return
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), _TICK_S)
            await self.save()

    async def _dispatch(self, alias: str, queue: deque[Line], now: float) -> None:
        rt = self.svc.gate.runtime
        policy = self.svc.policy(alias)
        spec = rt.config.models.get(alias)
        if spec is None:  # a reload removed the alias
            while queue:
                line = queue.popleft()
                error = {"code": "model_not_found", "message": f"Model '{alias}' is gone."}
                await self.finish_line(line.index, line.custom_id, alias, None, error, "none")
            return
        own = [t.backend for t in spec.targets if rt.config.backends[t.backend].pool is not None]
        provider = policy.provider
        if provider is not None and (policy.mode == "provider" or not own):
            await self._forward(alias, queue, "policy")
            return
        started = False
        while queue and self.inflight.get(alias, 0) < policy.max_inflight:
            if own and not self._room(own, policy, spec.spillover.max_inflight):
                break
            self._start_line(queue.popleft(), alias, own)
            started = True
        if started:
            self.progress[alias] = now
        if not queue or provider is None or policy.mode != "auto":
            return
        if now - self.progress[alias] >= policy.forward_after_stall_s:
            await self._forward(alias, queue, "stalled")
        elif now >= b_start(self.batch) + policy.forward_at_window_fraction * self._window():
            await self._forward(alias, queue, "deadline")

    def _window(self) -> float:
        return float(self.batch["expires_at"] - self.batch["created_at"])

    def _room(self, backends: list[str], policy: BatchPolicy, headroom: int | None) -> bool:
        """Room for one more line on the self-hosted targets, live requests first: none
        waiting for a slot, and the slots in use (live and batch) + 1 within the threshold
        of their capacity: `max_concurrency`, or the alias's `spillover.max_inflight` when
        lower (past it, live requests would spill to the API: batch work must not push
        them there)."""
        rt = self.svc.gate.runtime
        in_use = limit = 0
        pools = set()
        for name in backends:
            slots = rt.slots[name]
            if slots.free == 0 and slots._waiters:  # live requests queue: they go first
                return False
            in_use += slots.in_use
            limit += slots.limit if headroom is None else min(slots.limit, headroom)
            pools.add(rt.config.backends[name].pool)
        # With `--workers N` the live requests are the workers': the pools' shared books
        # count every process's requests in flight.
        shared = sum(rt.meter.pools[p].inflight for p in pools if p in rt.meter.pools)
        return max(in_use, shared) + 1 <= policy.utilization_threshold * limit

    # ------------------------------------------------------------ a line, in process

    def _start_line(self, line: Line, alias: str, own: list[str]) -> None:
        self.inflight[alias] = self.inflight.get(alias, 0) + 1
        task = asyncio.create_task(self._run_line(line, alias, bool(own)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_line(self, line: Line, alias: str, self_hosted: bool) -> None:
        rt = self.svc.gate.runtime
        try:
            await self.svc.store.put_line(self.id, line.index, {"final": False, "started": 1})
            finished: list[UsageEvent] = []

            def finish(ev: UsageEvent) -> None:
                finished.append(ev)
                if not _unsent(ev):
                    rt.meter.finish(ev)

            ex = LineExchange(orjson.dumps(line.body))
            call = InternalCall(
                self.principal, "batch", "self_hosted" if self_hosted else None, finish
            )
            await self.svc.gate.handler.serve(ex, self.batch["endpoint"], call)
            ev = finished[0]
            if _unsent(ev):  # nothing ran: back in the queue, not counted
                await self.svc.store.put_line(self.id, line.index, {"final": False})
                self.pending[alias].appendleft(line)
                return
            try:
                body: Any = orjson.loads(ex.answer)
            except orjson.JSONDecodeError:
                body = ex.answer.decode("utf-8", "replace")
            rid = ex.header(b"x-request-id") or ev.request_id
            ran = "self_hosted" if ev.self_hosted else "api"
            response = {"status_code": ex.status, "request_id": rid, "body": body}
            await self.finish_line(line.index, line.custom_id, alias, response, None, ran)
        finally:
            self.inflight[alias] -= 1
            self.progress[alias] = time.time()
            self.wake.set()

    async def finish_line(
        self,
        index: int,
        custom_id: str | None,
        alias: str,
        response: dict[str, Any] | None,
        error: dict[str, Any] | None,
        ran: str,
    ) -> bool:
        """Record a line's result once; count it done only after it is recorded."""
        ok = response is not None and response["status_code"] == 200 and error is None
        out = {
            "id": f"batch_req_{secrets.token_hex(12)}",
            "custom_id": custom_id,
            "response": response,
            "error": error,
        }
        rec = {"final": True, "ok": ok, "ran": ran, "out": out}
        if not await self.svc.store.put_line(self.id, index, rec):
            return False
        counts = self.batch["request_counts"]
        counts["completed" if ok else "failed"] += 1
        code = str(error.get("code")) if error is not None else ""
        if ok:
            outcome = "completed"
        elif code in _ENDINGS:
            outcome = _ENDINGS[code]
        elif response is None and ran == "none":
            outcome = "invalid"
        else:
            outcome = "failed"
        known = alias in self.svc.gate.runtime.config.models
        self.svc.metrics.line(alias if known else "other", outcome, ran)
        self.wake.set()
        return True

    def _recount(self, records: dict[int, dict[str, Any]]) -> None:
        done = [r for r in records.values() if r.get("final")]
        counts = self.batch["request_counts"]
        counts["completed"] = sum(1 for r in done if r.get("ok"))
        counts["failed"] = len(done) - counts["completed"]

    # ------------------------------------------------------------ the provider's batch

    async def _forward(self, alias: str, queue: deque[Line], why: str) -> None:
        policy = self.svc.policy(alias)
        name = policy.provider
        assert name is not None
        spec = self.svc.gate.runtime.config.models[alias]
        model = next(t.model for t in spec.targets if t.backend == name)
        lines = list(queue)
        queue.clear()
        part = {
            "key": str(len(self.batch["_parts"])),
            "backend": name,
            "alias": alias,
            "model": model,
            "why": why,
            "indices": [line.index for line in lines],
            "provider_batch_id": None,
            "done": False,
        }
        self.batch["_parts"].append(part)
        await self.save(force=True)  # the lines are the part's before anything is uploaded
        log.info("batch %s: %d lines of '%s' to %s (%s)", self.id, len(lines), alias, name, why)
        self._start_part(part)

    def _start_part(self, part: dict[str, Any]) -> None:
        task = asyncio.create_task(self._run_part(part))
        self.parts.add(task)
        task.add_done_callback(self.parts.discard)
        task.add_done_callback(lambda _: self.wake.set())

    async def _run_part(self, part: dict[str, Any]) -> None:
        cfg = self.svc.gate.runtime.config
        pv = ProviderBatches(part["backend"], cfg.backends[part["backend"]])
        meta = {"hybridgate_batch": self.id, "hybridgate_part": part["key"]}
        poll = self.svc.config.poll_interval_s
        remote: dict[str, Any] | None = None
        while remote is None or remote.get("status") not in TERMINAL:
            try:
                if part["provider_batch_id"] is None:
                    remote = await pv.find(meta) if part.get("submitting") else None
                    if remote is None:
                        part["submitting"] = True
                        await self.save(force=True)
                        remote = await pv.submit(self._jsonl(part), self.batch["endpoint"], meta)
                    part["provider_batch_id"] = remote["id"]
                    await self.save(force=True)
                else:
                    remote = await pv.get(part["provider_batch_id"])
                    part["provider_status"] = remote.get("status")
            except (ProviderError, OSError, ValueError, KeyError) as exc:
                log.warning("batch %s: provider %s: %s", self.id, part["backend"], exc)
                part["last_error"] = str(exc)[:300]
            if remote is not None and remote.get("status") in TERMINAL:
                break
            if time.time() >= self.batch["expires_at"] + poll * 3:
                remote = remote or {"status": "expired"}
                break  # the provider kept it past our window: what it finished is kept
            await asyncio.sleep(poll)
        try:
            results = await pv.lines(remote.get("output_file_id"))
            results += await pv.lines(remote.get("error_file_id"))
        except (ProviderError, OSError) as exc:
            results = []
            part["last_error"] = str(exc)[:300]
        await self._record_part(part, remote, results)
        part["done"] = True
        await self.save(force=True)

    def _jsonl(self, part: dict[str, Any]) -> bytes:
        out = []
        for i in part["indices"]:
            line = self.lines[i]
            req = {
                "custom_id": line.custom_id,
                "method": "POST",
                "url": self.batch["endpoint"],
                "body": {**line.body, "model": part["model"]},
            }
            out.append(orjson.dumps(req))
        return b"\n".join(out) + b"\n"

    async def _record_part(
        self, part: dict[str, Any], remote: dict[str, Any], results: list[dict[str, Any]]
    ) -> None:
        by_cid = {self.lines[i].custom_id: i for i in part["indices"] if i in self.lines}
        seen: set[int] = set()
        rt = self.svc.gate.runtime
        endpoint = ENDPOINTS[self.batch["endpoint"]]
        for res in results:
            index = by_cid.get(res.get("custom_id"))  # type: ignore[arg-type]
            if index is None or index in seen:
                continue
            seen.add(index)
            resp = res.get("response") if isinstance(res.get("response"), dict) else None
            error = res.get("error") if isinstance(res.get("error"), dict) else None
            response = None
            if resp is not None:
                response = {
                    "status_code": int(resp.get("status_code") or 0),
                    "request_id": resp.get("request_id"),
                    "body": resp.get("body"),
                }
            line = self.lines[index]
            if not await self.finish_line(
                index, line.custom_id, part["alias"], response, error, "provider"
            ):
                continue  # recorded (and metered) before a restart
            status = response["status_code"] if response else 0
            p, c, cached = _usage_of(response["body"] if response else None)
            ev = UsageEvent(
                request_id=f"hg-batch-{self.id}-{index}",
                started_at=time.time(),
                endpoint=endpoint,
                tenant=rt.tenant_label(self.principal.tenant),
                key_name=self.principal.key_name,
                alias=part["alias"],
                backend=part["backend"],
                model=part["model"],
                status=status,
                outcome="success" if status == 200 else "error",
                prompt_tokens=p,
                completion_tokens=c,
                cached_tokens=cached,
                kind="batch",
                batch_tier=True,
                attempts=[Attempt(part["backend"], part["model"], status=status)],
            )
            rt.meter.finish(ev)
        why = f"the provider's batch ended '{remote.get('status')}' without this request"
        for index in part["indices"]:
            if index not in seen and index in self.lines:
                line = self.lines[index]
                code = (
                    "batch_expired"
                    if remote.get("status") == "expired"
                    else "provider_batch_failed"
                )
                error = {"code": code, "message": f"{_EXPIRED if code == 'batch_expired' else why}"}
                await self.finish_line(
                    index, line.custom_id, part["alias"], None, error, "provider"
                )

    # ------------------------------------------------------------ endings

    async def _stop_all(self, code: str, message: str) -> None:
        """Cancel or expiry: nothing new starts, lines in flight finish, providers are
        told, and every line not run gets `code`."""
        for part in self.batch["_parts"]:
            if not part.get("done") and part.get("provider_batch_id"):
                cfg = self.svc.gate.runtime.config
                with contextlib.suppress(ProviderError, OSError):
                    await ProviderBatches(part["backend"], cfg.backends[part["backend"]]).cancel(
                        part["provider_batch_id"]
                    )
        while self.tasks:
            await asyncio.wait(set(self.tasks))
        while self.parts:
            await asyncio.wait(set(self.parts))
        for queue in self.pending.values():
            while queue:
                line = queue.popleft()
                error = {"code": code, "message": message}
                await self.finish_line(line.index, line.custom_id, line.alias, None, error, "none")

    async def _expire(self) -> None:
        left = sum(len(q) for q in self.pending.values())
        reasons = []
        for alias, queue in self.pending.items():
            if not queue:
                continue
            policy = self.svc.policy(alias)
            if policy.provider is None or policy.mode == "self_hosted":
                reasons.append(
                    f"'{alias}': {len(queue)} line(s) found no room on the self-hosted pool "
                    f"(slots in use stayed at or above utilization_threshold "
                    f"{policy.utilization_threshold}) and no batch provider may take them"
                )
            else:
                reasons.append(f"'{alias}': {len(queue)} line(s) not started in time")
        self.batch["errors"] = {
            "object": "list",
            "data": [
                {
                    "code": "batch_expired",
                    "message": f"{left} request(s) did not run within the completion window: "
                    + "; ".join(reasons),
                    "param": None,
                    "line": None,
                }
            ],
        }
        self.batch["_ending"] = "expired"
        await self._stop_all("batch_expired", _EXPIRED)

    async def _fail(self, code: str, message: str) -> None:
        now = int(time.time())
        self.batch.update(
            status="failed",
            failed_at=now,
            errors={
                "object": "list",
                "data": [{"code": code, "message": message, "param": None, "line": None}],
            },
        )
        await self.save(force=True)

    async def _finalize(self) -> None:
        b = self.batch
        ending = b.get("_ending") or ("cancelled" if self.cancel_requested else "completed")
        if b["status"] not in ("finalizing", "cancelling"):
            b["status"] = "finalizing"
            b["finalizing_at"] = int(time.time())
        await self.save(force=True)
        records = await self.svc.store.lines(self.id)
        self._recount(records)
        ok: list[bytes] = []
        bad: list[bytes] = []
        for index in sorted(records):
            rec = records[index]
            if rec.get("final"):
                (ok if rec.get("ok") else bad).append(orjson.dumps(rec["out"]))
        b["output_file_id"] = await self.svc.write_output(b, "output", ok)
        b["error_file_id"] = await self.svc.write_output(b, "errors", bad)
        now = int(time.time())
        b["status"] = ending
        b[f"{ending}_at"] = now
        if ending == "cancelled" and not b.get("cancelling_at"):
            b["cancelling_at"] = now
        await self.save(force=True)

    async def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._saved >= _SAVE_S:
            self._saved = now
            await self.svc.store.put_batch(self.batch)


def b_start(batch: dict[str, Any]) -> float:
    return float(batch["created_at"])
