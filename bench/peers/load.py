"""Load for the peer comparison: one target (a proxy, or the upstream itself) at a time.

    probe   one plain and one streaming request; checks the answers are well formed
    closed  max throughput: wrk, C keep-alive connections, T seconds, non-streaming
    open    a fixed request rate whatever the answers do (open loop), non-streaming:
            latency from the moment each request is written; a new connection when
            every open one is busy
    stream  C clients in a closed loop of streaming requests: time to the first SSE
            event (TTFT), to the end, streams/s; every stream must end with the usage
            chunk and `data: [DONE]`
    suite   probe, warm-up, then REPS x (closed, open at each rate, stream), each started
            once the target's process tree (--pid) is idle and measured with that tree's
            CPU seconds over the run; then the tree's peak RSS. Writes one JSON file for
            bench/peers/report.py.

Every run is bounded: by its duration, a per-request timeout, and a cap on connections.
Only loopback URLs are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httptools
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procstat import cpu_seconds, peak_rss_kb

TIMEOUT_S = 30.0
MAX_CONNS = 1024


@dataclass
class Target:
    url: str
    headers: list[tuple[str, str]]
    model: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"refusing a non-loopback target: {self.url}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")

    def body(self, stream: bool) -> bytes:
        req: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 16,
        }
        if stream:
            req["stream"] = True
            req["stream_options"] = {"include_usage": True}
        return json.dumps(req, separators=(",", ":")).encode()

    def request(self, stream: bool) -> bytes:
        body = self.body(stream)
        head = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in self.headers),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Answer:
    status: int
    first_event: float | None  # perf_counter of the first `data:` bytes
    body: bytes


class Conn(asyncio.Protocol):
    """One keep-alive client connection; one request in flight at a time."""

    def __init__(self, keep_body: bool) -> None:
        self.keep_body = keep_body
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.first: float | None = None
        self.chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_message_begin(self) -> None:
        self.first = None
        self.chunks = []

    def on_body(self, body: bytes) -> None:
        if self.first is None and b"data:" in body:
            self.first = time.perf_counter()
        if self.keep_body:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            status = self.parser.get_status_code()
            self.waiter.set_result(Answer(status, self.first, b"".join(self.chunks)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("connection closed"))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, data: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


async def connect(t: Target, keep_body: bool = False) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(
        loop.create_connection(lambda: Conn(keep_body), t.host, t.port), TIMEOUT_S
    )
    return conn


def pct(values: list[float], p: float) -> float | None:
    """Percentile by linear interpolation between closest ranks."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def latency_ms(seconds: list[float]) -> dict[str, float | None]:
    ms = [x * 1000 for x in seconds]
    return {
        "n": len(ms),
        **{f"p{p}": pct(ms, p) for p in (50, 90, 99)},
        "max": max(ms, default=None),
    }


def stream_complete(body: bytes) -> bool:
    """The checks a client of the proxy relies on: the usage chunk, then `[DONE]`."""
    return b'"usage"' in body and body.rstrip().endswith(b"data: [DONE]")


# ------------------------------------------------------------------ runs
async def probe(t: Target) -> dict[str, Any]:
    conn = await connect(t, keep_body=True)
    try:
        plain = await asyncio.wait_for(conn.send(t.request(False)), TIMEOUT_S)
        doc = json.loads(plain.body) if plain.status == 200 else {}
        streamed = await asyncio.wait_for(conn.send(t.request(True)), TIMEOUT_S)
    finally:
        if conn.transport is not None:
            conn.transport.close()
    events = [e[6:] for e in streamed.body.split(b"\n\n") if e.startswith(b"data: ")]
    chunks = [json.loads(e) for e in events if e != b"[DONE]"]
    content = sum(
        1 for c in chunks for ch in c.get("choices") or [] if (ch.get("delta") or {}).get("content")
    )
    out = {
        "plain_status": plain.status,
        "plain_usage": (doc.get("usage") or {}).get("total_tokens"),
        "stream_status": streamed.status,
        "content_chunks": content,
        "usage_chunk": any(c.get("usage") for c in chunks),
        "done": bool(events) and events[-1] == b"[DONE]",
    }
    out["ok"] = (
        plain.status == 200
        and streamed.status == 200
        and bool(out["plain_usage"])
        and out["usage_chunk"]
        and out["done"]
    )
    return out


async def open_loop(t: Target, rate: float, seconds: float) -> dict[str, Any]:
    request = t.request(False)
    idle = [await connect(t) for _ in range(min(16, MAX_CONNS))]
    opened = len(idle)
    lat: list[float] = []
    errors: dict[str, int] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        nonlocal opened
        conn = idle.pop() if idle else None
        try:
            if conn is None:
                if opened >= MAX_CONNS:
                    raise ConnectionError("connection cap reached")
                opened += 1  # counted before the await: the cap holds while connects are pending
                try:
                    conn = await connect(t)
                except Exception:
                    opened -= 1
                    raise
            t0 = time.perf_counter()
            answer = await asyncio.wait_for(conn.send(request), TIMEOUT_S)
            if answer.status != 200:
                raise ValueError(f"HTTP {answer.status}")
            lat.append(time.perf_counter() - t0)
        except Exception as exc:  # counted, never fatal: an overloaded target is a result
            key = type(exc).__name__ + (f" {exc}" if isinstance(exc, ValueError) else "")
            errors[key] = errors.get(key, 0) + 1
        if conn is None:
            return
        if conn.usable:
            idle.append(conn)
        else:
            opened -= 1
            if conn.transport is not None:
                conn.transport.close()

    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=TIMEOUT_S + 5)
    elapsed = time.perf_counter() - start
    unanswered = total - len(lat) - sum(errors.values())
    if unanswered:  # still pending after the timeout: failed too, not just missing
        errors["unanswered"] = unanswered
    for c in idle:
        if c.transport is not None:
            c.transport.close()
    return {
        "rate": rate,
        "sent": total,
        "ok": len(lat),
        "errors": errors,
        "achieved_rps": len(lat) / elapsed,
        "latency_ms": latency_ms(lat),
    }


async def stream_loop(t: Target, clients: int, seconds: float) -> dict[str, Any]:
    request = t.request(True)
    ttft: list[float] = []
    total: list[float] = []
    errors: dict[str, int] = {}
    stop = time.perf_counter() + seconds

    async def client() -> None:
        conn: Conn | None = None
        while time.perf_counter() < stop:
            try:
                if conn is None or not conn.usable:
                    conn = await connect(t, keep_body=True)
                t0 = time.perf_counter()
                answer = await asyncio.wait_for(conn.send(request), TIMEOUT_S)
                t1 = time.perf_counter()
                if answer.status != 200:
                    raise ValueError(f"HTTP {answer.status}")
                if not stream_complete(answer.body):
                    raise ValueError("stream without the usage chunk or [DONE]")
                ttft.append((answer.first_event or t1) - t0)
                total.append(t1 - t0)
            except Exception as exc:
                key = type(exc).__name__ + (f" {exc}" if isinstance(exc, ValueError) else "")
                errors[key] = errors.get(key, 0) + 1
                if conn is not None and conn.transport is not None:
                    conn.transport.close()
                conn = None
                await asyncio.sleep(0.05)  # a failing target is not a busy loop
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return {
        "clients": clients,
        "streams": len(total),
        "errors": errors,
        "streams_per_s": len(total) / elapsed,
        "ttft_ms": latency_ms(ttft),
        "total_ms": latency_ms(total),
    }


WRK_LUA = """wrk.method = "POST"
wrk.body = [==[{body}]==]
{headers}
"""


def closed_wrk(t: Target, conns: int, seconds: int) -> dict[str, Any]:
    """wrk's req/s: a Python client would cap well below what `direct` can do."""
    headers = [("Content-Type", "application/json"), *t.headers]
    lua = WRK_LUA.format(
        body=t.body(False).decode(),
        headers="\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers),
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua)
        script.flush()
        cmd = [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            script.name,
            t.url,
        ]
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 60, check=True
        ).stdout
    return parse_wrk(out, conns)


def parse_wrk(out: str, conns: int) -> dict[str, Any]:
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done is None:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    secs = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "conns": conns,
        "requests": int(done.group(1)),
        "seconds": secs,
        "rps": int(done.group(1)) / secs,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


# ------------------------------------------------------------------ suite
def settle(pid: int, idle_share: float = 0.05, limit_s: float = 60.0) -> float:
    """Wait until the target's tree is idle: an overloaded target is still working off the
    previous run's backlog (requests its clients gave up on), and that CPU must not be billed
    to the next run's requests. Idle = under `idle_share` of a CPU over half a second; at most
    `limit_s`. Returns the seconds waited."""
    start = time.monotonic()
    before = cpu_seconds(pid)
    while time.monotonic() - start < limit_s:
        time.sleep(0.5)
        after = cpu_seconds(pid)
        if sum(v - before.get(p, 0.0) for p, v in after.items()) < idle_share * 0.5:
            break
        before = after
    return time.monotonic() - start


def measured(pid: int, run: Any, count_key: str) -> dict[str, Any]:
    """`run()`'s result plus the target tree's CPU seconds per 1,000 answered requests."""
    settled = settle(pid) if pid else 0.0
    before = cpu_seconds(pid) if pid else {}
    result = run()
    if pid:
        after = cpu_seconds(pid)
        used = sum(v - before.get(p, 0.0) for p, v in after.items())
        n = result[count_key]
        result["cpu_s"] = used
        result["cpu_s_per_1k"] = used / n * 1000 if n else None
    result["loadavg"] = os.getloadavg()[0]
    result["settle_s"] = settled
    return result


def suite(args: argparse.Namespace, t: Target) -> dict[str, Any]:
    def log(msg: str) -> None:
        print(f"[load {time.strftime('%H:%M:%S')}] {args.name}: {msg}", file=sys.stderr, flush=True)

    checked = uvloop.run(probe(t))
    log(f"probe {checked}")
    if not checked["ok"]:
        raise SystemExit(f"{args.name}: the probe failed: {checked}")
    if args.warmup_s > 0:  # JITs (node) and lazy imports (LiteLLM) settle before anything counts
        closed_wrk(t, args.conns, args.warmup_s)
        log(f"warmed up for {args.warmup_s} s")
    reps: list[dict[str, Any]] = []
    for rep in range(args.reps):
        r: dict[str, Any] = {}
        r["closed"] = measured(
            args.pid, lambda: closed_wrk(t, args.conns, args.closed_s), "requests"
        )
        log(f"rep {rep + 1} closed {r['closed']['rps']:.0f} req/s")
        r["open"] = {}
        for rate in args.rates:
            res = measured(
                args.pid, lambda rate=rate: uvloop.run(open_loop(t, rate, args.open_s)), "ok"
            )
            r["open"][f"{rate:g}"] = res
            p50 = res["latency_ms"]["p50"]
            log(f"rep {rep + 1} open {rate:g}/s p50 {p50:.3f} ms, errors {res['errors']}")
        r["stream"] = measured(
            args.pid,
            lambda: uvloop.run(stream_loop(t, args.stream_clients, args.stream_s)),
            "streams",
        )
        st = r["stream"]
        log(f"rep {rep + 1} stream {st['streams_per_s']:.0f}/s, errors {st['errors']}")
        reps.append(r)
    rss_kb, nprocs = peak_rss_kb(args.pid) if args.pid else (0, 0)
    return {
        "name": args.name,
        "url": t.url,
        "probe": checked,
        "reps": reps,
        "peak_rss_mb": rss_kb / 1024 if args.pid else None,
        "nprocs": nprocs,
        "note": args.note,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["probe", "closed", "open", "stream", "suite"])
    ap.add_argument("--url", required=True, help="the chat-completions URL (loopback)")
    ap.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    ap.add_argument("--model", default="bench-model")
    ap.add_argument(
        "-c", "--conns", type=int, default=32, help="closed: connections; stream: clients"
    )
    ap.add_argument("-d", "--seconds", type=float, default=10, help="closed/open/stream duration")
    ap.add_argument("-r", "--rate", type=float, default=100, help="open: requests per second")
    ap.add_argument("--name", default="target")
    ap.add_argument("--pid", type=int, default=0, help="suite: root of the target's process tree")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup-s", type=int, default=2, help="suite: closed-loop load not measured")
    ap.add_argument("--closed-s", type=int, default=10)
    ap.add_argument("--rates", type=float, nargs="+", default=[100, 300])
    ap.add_argument("--open-s", type=float, default=10)
    ap.add_argument("--stream-clients", type=int, default=10)
    ap.add_argument("--stream-s", type=float, default=10)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, help="suite: write the JSON here")
    a = ap.parse_args()
    headers = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in a.header)]
    t = Target(a.url, headers, a.model)
    result: dict[str, Any]
    if a.mode == "probe":
        result = uvloop.run(probe(t))
    elif a.mode == "closed":
        result = closed_wrk(t, a.conns, int(a.seconds))
    elif a.mode == "open":
        result = uvloop.run(open_loop(t, a.rate, a.seconds))
    elif a.mode == "stream":
        result = uvloop.run(stream_loop(t, a.conns, a.seconds))
    else:
        result = suite(a, t)
    text = json.dumps(result, indent=1)
    if a.out:
        a.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
