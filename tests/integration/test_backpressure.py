"""Backpressure: clients that stop reading a stream must not make the proxy buffer the
upstream without bound.

50 clients open long streams from a fast vLLM-like upstream and stop reading. The relay
(proxy/server/fastpath.py) waits on uvicorn's flow control while the client socket is full; the
upstream client (proxy/backends/h1client.py) then stops reading the upstream socket past
its high-water mark. The test sees that happen from the kernel's side (/proc/net/tcp: the upstream's
bytes pile up unread in the proxy's sockets) while the upstream goes on generating far
more than the bound, and the proxy's RSS stays within it. Other clients are served
meanwhile; a stalled client that resumes gets its whole stream; the ones that hang up are
metered as disconnects.

The stalled clients set a small MSS and receive buffer before connecting: over loopback
(64 KiB MTU) the kernel would otherwise absorb ~4 MB per stream in the proxy's send
buffer before the proxy's own buffers were ever tested.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import httpx
import orjson
import pytest

from tests.support.proxy import ProxyHandle, run_proxy
from tests.support.routing import content_events, parse_sse
from tests.support.sim import SimHandle, run_simulator

KEY = "sk-backpressure-key-0042"
STALLED = 50
RESUMED = 3  # of the stalled clients, these read on after the hold; the rest hang up
MAX_TOKENS = 20000  # per stalled stream: ~4.4 MB of SSE each, ~220 MB for all 50
BOUND_KB = 20 * 1024  # RSS growth allowed while they hang
PAUSED_KB = 64  # unread upstream bytes that show the proxy stopped reading a stream
# They hang until every upstream is paused and the upstream has generated twice the bound
# for them (at least MIN_HOLD_S, at most MAX_HOLD_S: bounds on the test, not timing claims).
MIN_HOLD_S, MAX_HOLD_S = 3.0, 60.0


def cfg(sim: SimHandle) -> dict[str, Any]:
    return {
        "auth": {"keys": [{"key": KEY, "tenant": "t"}]},
        "gpu_pools": {"p": {"gpus": 1, "billing": "rental", "usd_per_gpu_hour": 1.0}},
        "backends": {"local": {"base_url": sim.base_url, "pool": "p"}},
        "models": {"chat": {"targets": [{"backend": "local", "model": "sim-model"}]}},
        "health_checks": {"interval_s": 60},
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyHandle, SimHandle]]:
    tmp = tmp_path_factory.mktemp("backpressure")
    args = [
        "--speed", "400", "--max-model-len", "100000", "--kv-cache-tokens", "10000000",
        "--max-num-seqs", "256",
    ]  # fmt: skip
    with run_simulator(tmp, "vllm", args=args) as sim, run_proxy(tmp, cfg(sim)) as proxy:
        yield proxy, sim


def body(max_tokens: int, stream: bool) -> dict[str, Any]:
    return {
        "model": "chat",
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
    }


def unread_upstream_kb(upstream_port: int) -> list[int]:
    """For each established connection to `upstream_port` on this host: KiB that arrived
    and the reading process (the proxy: nothing else talks to the simulator) has not read."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[2].split(":")[1], 16) == upstream_port:
            out.append(int(fields[4].split(":")[1], 16) // 1024)
    return out


@dataclass
class Stalled:
    """A client that reads the head of a stream, then nothing until told to go on or go."""

    status: int = 0
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)
    go_on: asyncio.Event = field(default_factory=asyncio.Event)
    hang_up: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, proxy: ProxyHandle) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        # Before connect, so they shape the handshake (httpx sets options after it).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1024)
        conn = h11.Connection(h11.CLIENT)
        payload = orjson.dumps(body(MAX_TOKENS, True))
        request = conn.send(
            h11.Request(
                method="POST",
                target="/v1/chat/completions",
                headers=[
                    ("host", "127.0.0.1"),
                    ("authorization", f"Bearer {KEY}"),
                    ("content-type", "application/json"),
                    ("content-length", str(len(payload))),
                ],
            )
        )
        try:
            await loop.sock_connect(sock, ("127.0.0.1", proxy.port))
            await loop.sock_sendall(sock, request + conn.send(h11.Data(data=payload)))
            await self._read(loop, sock, conn, until_first_data=True)
            self.started.set()
            go_on = asyncio.ensure_future(self.go_on.wait())
            hang_up = asyncio.ensure_future(self.hang_up.wait())
            await asyncio.wait([go_on, hang_up], return_when=asyncio.FIRST_COMPLETED)
            go_on.cancel()
            hang_up.cancel()
            if self.go_on.is_set():
                await self._read(loop, sock, conn, until_first_data=False)
        finally:
            sock.close()  # mid-stream for those that hang up

    async def _read(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        conn: h11.Connection,
        until_first_data: bool,
    ) -> None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await loop.sock_recv(sock, 65536))
            elif isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.Data):
                self.body += event.data
                if until_first_data:
                    return
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.complete = isinstance(event, h11.EndOfMessage)
                return


async def other_clients(proxy: ProxyHandle, stop: asyncio.Event) -> list[tuple[int, bool]]:
    """Plain requests and short streams while the stalled ones hang: (status, complete)."""
    out: list[tuple[int, bool]] = []
    url = f"{proxy.base_url}/chat/completions"
    async with httpx.AsyncClient(timeout=30, headers=proxy.headers()) as client:
        while not stop.is_set() or len(out) < 4:
            r = await client.post(url, json=body(5, False))
            out.append((r.status_code, r.status_code == 200 and bool(r.json()["choices"])))
            r = await client.post(url, json=body(20, True))
            events, done = parse_sse(r.content)
            out.append((r.status_code, done and content_events(events) == 20))
            await asyncio.sleep(0.2)
    return out


async def scenario(proxy: ProxyHandle, sim: SimHandle) -> dict[str, Any]:
    # Warm-up: the paths and allocations a stream needs, and the SSE bytes per token.
    async with httpx.AsyncClient(timeout=60, headers=proxy.headers()) as client:
        url = f"{proxy.base_url}/chat/completions"
        for _ in range(3):
            warm = await client.post(url, json=body(2000, True))
        await client.post(url, json=body(5, False))
    bytes_per_token = len(warm.content) / 2000
    tokens_before = (await asyncio.to_thread(sim.stats, False))["completion_tokens_total"]
    baseline = proxy.proc.rss_kb()

    clients = [Stalled() for _ in range(STALLED)]
    tasks = [asyncio.ensure_future(c.run(proxy)) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.started.wait() for c in clients)), 60)
    t_stall = time.monotonic()
    stop = asyncio.Event()
    served = asyncio.ensure_future(other_clients(proxy, stop))
    samples = []
    while True:
        samples.append(proxy.proc.rss_kb())
        stats = await asyncio.to_thread(sim.stats, False)
        upstream_kb = (stats["completion_tokens_total"] - tokens_before) * bytes_per_token / 1024
        paused = sum(kb >= PAUSED_KB for kb in unread_upstream_kb(sim.port))
        held = time.monotonic() - t_stall
        if held > MAX_HOLD_S or (
            paused >= STALLED and upstream_kb > 2 * BOUND_KB and held > MIN_HOLD_S
        ):
            break
        await asyncio.sleep(0.25)
    stop.set()
    await served
    samples.append(proxy.proc.rss_kb())
    for c in clients[:RESUMED]:
        c.go_on.set()
    for c in clients[RESUMED:]:
        c.hang_up.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return {
        "baseline_kb": baseline,
        "peak_kb": max(samples),
        "last_kb": samples[-1],
        "upstream_kb": upstream_kb,
        "paused": paused,
        "held_s": held,
        "served": served.result(),
        "clients": clients,
    }


def test_stalled_readers_do_not_grow_memory(stack: tuple[ProxyHandle, SimHandle]) -> None:
    proxy, sim = stack
    before = proxy.metric("hybridgate_requests_total", outcome="client_disconnect")
    out = asyncio.run(scenario(proxy, sim))
    growth_kb = out["peak_kb"] - out["baseline_kb"]
    print(
        f"backpressure: {STALLED} stalled streams held {out['held_s']:.1f} s, "
        f"{out['paused']} upstream reads paused; proxy RSS {out['baseline_kb'] / 1024:.1f} MiB "
        f"before, peak {out['peak_kb'] / 1024:.1f} MiB (+{growth_kb / 1024:.1f} MiB), last "
        f"{out['last_kb'] / 1024:.1f} MiB; the upstream generated "
        f"{out['upstream_kb'] / 1024:.0f} MiB of SSE for them meanwhile; "
        f"{len(out['served'])} other requests served"
    )
    # The proxy stopped reading every stalled stream's upstream, and the test can fail:
    # buffering what the upstream produced would have exceeded the bound twice over.
    assert out["paused"] >= STALLED
    assert out["upstream_kb"] > 2 * BOUND_KB
    assert growth_kb < BOUND_KB
    # Others were served while 50 streams hung.
    assert out["served"] and all(status == 200 and ok for status, ok in out["served"])
    clients = out["clients"]
    assert all(c.status == 200 for c in clients)
    # A stalled stream was paused, not dropped: read on, it arrives whole.
    for c in clients[:RESUMED]:
        events, done = parse_sse(bytes(c.body))
        assert c.complete and done and content_events(events) == MAX_TOKENS
    # Those that hung up were metered as disconnects.
    deadline = time.monotonic() + 15
    while (
        proxy.metric("hybridgate_requests_total", outcome="client_disconnect") - before
        < STALLED - RESUMED
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    hung_up = proxy.metric("hybridgate_requests_total", outcome="client_disconnect") - before
    assert hung_up == STALLED - RESUMED
    assert proxy.proc.alive()
