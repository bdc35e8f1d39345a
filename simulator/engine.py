"""The GPU model: one step loop with a batch limit and a FIFO queue, and its accounting.

Like vLLM's scheduler, a single task runs steps back to back while there is work.
Each step admits waiting sequences (FIFO, up to `max_num_seqs` running, a prefill
token budget and the KV cache), prefills them (their first token comes at the end
of that step) and decodes one token for every other running sequence. A step lasts

    step_overhead + prefill_overhead (if any prefill) + a × prefill tokens + b × running

so latency grows with load and saturation is real. The measured duration of each
step is split equally among the sequences in it: each sequence's `gpu_seconds` is
its true share, and the shares add up to `busy_seconds` exactly (to float rounding).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

WAITING, RUNNING, FINISHED = "waiting", "running", "finished"


class Sequence:
    """One request inside an engine; `n` parallel choices weigh as `n` sequences."""

    __slots__ = (
        "_task",
        "_waiter",
        "arrived",
        "cached_tokens",
        "cancelled",
        "finished",
        "first_token",
        "generated",
        "gpu_seconds",
        "id",
        "max_tokens",
        "n",
        "prompt_tokens",
        "started",
        "state",
    )

    def __init__(
        self, id: str, prompt_tokens: int, max_tokens: int, n: int = 1, cached_tokens: int = 0
    ) -> None:
        self.id = id
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = cached_tokens
        self.max_tokens = max_tokens  # per choice; 0 = prefill only (embeddings)
        self.n = n
        self.generated = 0  # tokens per choice so far
        self.gpu_seconds = 0.0
        self.state = WAITING
        self.cancelled = False
        self.arrived = time.time()
        self.started: float | None = None
        self.first_token: float | None = None
        self.finished: float | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self.state == FINISHED

    @property
    def completion_tokens(self) -> int:
        return self.generated * self.n

    def notify(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def wait_beyond(self, seen: int) -> None:
        """Wait until more than `seen` tokens exist or the sequence is finished."""
        while self.generated <= seen and self.state != FINISHED:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    async def wait_finished(self) -> None:
        while self.state != FINISHED:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


class EngineLike(Protocol):
    busy_seconds: float

    def submit(self, seq: Sequence, stream: bool) -> None: ...
    def cancel(self, seq: Sequence) -> None: ...
    def start(self) -> None: ...
    async def stop(self) -> None: ...
    @property
    def num_running(self) -> int: ...
    @property
    def num_waiting(self) -> int: ...
    @property
    def kv_usage(self) -> float: ...
    def reset_accounting(self) -> None: ...


@dataclass
class StepModel:
    """Cost of one step in milliseconds, before the speed multiplier."""

    step_overhead_ms: float = 12.0
    prefill_overhead_ms: float = 18.0
    prefill_ms_per_token: float = 0.25
    decode_ms_per_seq: float = 0.15
    speed: float = 1.0

    def seconds(self, prefill_tokens: int, running: int) -> float:
        ms = self.step_overhead_ms + self.decode_ms_per_seq * running
        if prefill_tokens:
            ms += self.prefill_overhead_ms + self.prefill_ms_per_token * prefill_tokens
        return ms / 1000.0 / self.speed


class Engine:
    """vLLM-like continuous batching; see the module docstring."""

    def __init__(
        self,
        model: StepModel,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 8192,
        kv_cache_tokens: int = 400_000,
        on_finish: Callable[[Sequence], None] | None = None,
    ) -> None:
        self.model = model
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.kv_cache_tokens = kv_cache_tokens
        self.on_finish = on_finish
        self.running: list[Sequence] = []
        self.waiting: deque[Sequence] = deque()
        self.busy_seconds = 0.0
        self.steps = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self._kv_used = 0
        self._weight = 0  # running sequences, counting each choice
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- public surface ------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_usage(self) -> float:
        return min(1.0, self._kv_used / self.kv_cache_tokens) if self.kv_cache_tokens else 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="sim-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def submit(self, seq: Sequence, stream: bool = False) -> None:
        self.waiting.append(seq)
        w = self._wake
        if w is not None and not w.done():
            w.set_result(None)

    def cancel(self, seq: Sequence) -> None:
        """Drop a sequence; a running one leaves after the step in progress (it ran in it)."""
        if seq.state == FINISHED:
            return
        seq.cancelled = True
        if seq.state == WAITING:
            with contextlib.suppress(ValueError):
                self.waiting.remove(seq)
            self._finish(seq, time.time())

    def reset_accounting(self) -> None:
        self.busy_seconds = 0.0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        for seq in self.running:
            seq.gpu_seconds = 0.0

    # -- the loop ------------------------------------------------------------------
    def _admit(self) -> tuple[list[Sequence], int]:
        admitted: list[Sequence] = []
        prefill = 0
        while self.waiting:
            seq = self.waiting[0]
            busy = bool(self.running or admitted)
            tokens = max(1, seq.prompt_tokens - seq.cached_tokens)
            if busy and (
                self._weight + seq.n > self.max_num_seqs
                or prefill + tokens > self.max_num_batched_tokens
                or self._kv_used + seq.prompt_tokens > self.kv_cache_tokens
            ):
                break
            self.waiting.popleft()
            seq.state = RUNNING
            seq.started = time.time()
            admitted.append(seq)
            self.running.append(seq)
            self._weight += seq.n
            self._kv_used += seq.prompt_tokens
            prefill += tokens
        return admitted, prefill

    async def _loop(self) -> None:
        # perf_counter, not loop.time(): uvloop's clock has millisecond resolution.
        loop = asyncio.get_running_loop()
        clock = time.perf_counter
        start: float | None = None
        while True:
            if not self.running and not self.waiting:
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
                start = None
            admitted, prefill = self._admit()
            batch = self.running
            if not batch:
                continue
            weight = self._weight
            if start is None:
                start = clock()
            deadline = start + self.model.seconds(prefill, weight)
            await asyncio.sleep(max(0.0, deadline - clock()))
            end = clock()
            self._account(batch, admitted, weight, end - start)
            # Steps run back to back: Python work between two steps is part of the next.
            start = end

    def _account(
        self, batch: list[Sequence], admitted: list[Sequence], weight: int, duration: float
    ) -> None:
        self.steps += 1
        self.busy_seconds += duration
        share = duration / weight
        now = time.time()
        for seq in admitted:
            self.prompt_tokens_total += seq.prompt_tokens
        still: list[Sequence] = []
        for seq in batch:
            seq.gpu_seconds += share * seq.n
            if not seq.cancelled and seq.max_tokens > 0:
                seq.generated += 1
                self._kv_used += seq.n
                self.generation_tokens_total += seq.n
                if seq.generated == 1:
                    seq.first_token = now
            if seq.cancelled or seq.generated >= seq.max_tokens:
                self._finish(seq, now)
            else:
                still.append(seq)
                seq.notify()
        self.running = still

    def _finish(self, seq: Sequence, now: float) -> None:
        if seq.started is not None:
            self._weight -= seq.n
            self._kv_used -= seq.prompt_tokens + seq.generated * seq.n
        seq.state = FINISHED
        seq.finished = now
        seq.notify()
        if self.on_finish is not None:
            self.on_finish(seq)


class FixedLatencyEngine:
    """API mode: no shared GPU, each request takes ttft + itl per further token."""

    def __init__(self, ttft_s: float, itl_s: float) -> None:
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self.busy_seconds = 0.0  # an API has no GPU we pay for by the second
        self._running = 0

    @property
    def num_running(self) -> int:
        return self._running

    @property
    def num_waiting(self) -> int:
        return 0

    @property
    def kv_usage(self) -> float:
        return 0.0

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def reset_accounting(self) -> None:
        pass

    def submit(self, seq: Sequence, stream: bool = False) -> None:
        seq.state = RUNNING
        seq.started = seq.arrived
        if self.ttft_s <= 0 and self.itl_s <= 0:
            seq.generated = seq.max_tokens
            seq.first_token = seq.finished = seq.started
            seq.state = FINISHED
            return
        self._running += 1
        seq._task = asyncio.get_running_loop().create_task(self._drive(seq, stream))
        seq._task.add_done_callback(lambda _: self._finished(seq))

    def cancel(self, seq: Sequence) -> None:
        if seq.state == FINISHED:
            return
        seq.cancelled = True
        if seq._task is not None:
            seq._task.cancel()

    async def _drive(self, seq: Sequence, stream: bool) -> None:
        if not stream or self.itl_s <= 0:
            await asyncio.sleep(self.ttft_s + self.itl_s * max(0, seq.max_tokens - 1))
            seq.first_token = time.time()
            seq.generated = seq.max_tokens
            return
        await asyncio.sleep(self.ttft_s)
        seq.first_token = time.time()
        while seq.generated < seq.max_tokens:
            if seq.generated:
                await asyncio.sleep(self.itl_s)
            seq.generated += 1
            if seq.generated < seq.max_tokens:
                seq.notify()

    def _finished(self, seq: Sequence) -> None:
        # A done-callback, not a `finally`: it also runs for a task cancelled before it began.
        self._running -= 1
        seq.state = FINISHED
        seq.finished = time.time()
        seq.notify()
