"""The tests' one stack builder: a vLLM-like and an API-like simulator, a Redis if the
test wants shared state, and one or more `hybridgate serve` processes in front of them.

    with run_stack(tmp_path, lambda local, api: hybrid_config(local, api)) as s:
        s.proxy, s.local, s.api            # or s.proxies with replicas=3, s.redis with redis=True

Everything it started is stopped whatever happens, in reverse order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.proxy import ProxyHandle, run_proxy
from tests.support.redis import RedisHandle, run_redis
from tests.support.sim import SimHandle, run_simulator

SIM_ARGS = ("--speed", "20")
ConfigFor = Callable[[SimHandle, SimHandle], dict[str, Any]]


@dataclass
class Stack:
    proxies: list[ProxyHandle]
    local: SimHandle
    api: SimHandle
    redis: RedisHandle | None

    @property
    def proxy(self) -> ProxyHandle:
        return self.proxies[0]


@contextlib.contextmanager
def sim_pair(
    tmp_path: Path, local_args: Sequence[str] = SIM_ARGS, api_args: Sequence[str] = SIM_ARGS
) -> Iterator[tuple[SimHandle, SimHandle]]:
    """The two upstreams every hybrid stack has: self-hosted (vllm mode) and pay-per-token."""
    with (
        run_simulator(tmp_path, "vllm", args=local_args) as local,
        run_simulator(tmp_path, "api", args=api_args, name="api") as api,
    ):
        yield local, api


@contextlib.contextmanager
def run_replicas(
    tmp_path: Path,
    config: dict[str, Any],
    n: int,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[list[ProxyHandle]]:
    """`n` proxies with the same config, started in parallel (startup is import-bound)."""
    if n == 1:
        with run_proxy(tmp_path, config, args=args, env=env) as p:
            yield [p]
        return
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(n) as pool:
        managers = [run_proxy(tmp_path, config, name=f"r{i}", args=args, env=env) for i in range(n)]
        futures = [pool.submit(m.__enter__) for m in managers]
        handles: list[ProxyHandle] = []
        error: BaseException | None = None
        for m, f in zip(managers, futures, strict=True):
            try:
                handles.append(f.result())
                stack.push(m.__exit__)
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error
        yield handles


@contextlib.contextmanager
def run_stack(
    tmp_path: Path,
    config: ConfigFor,
    *,
    local_args: Sequence[str] = SIM_ARGS,
    api_args: Sequence[str] = SIM_ARGS,
    sims: tuple[SimHandle, SimHandle] | None = None,
    redis: bool = False,
    replicas: int = 1,
    proxy_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Simulators (or the running `sims` a module shares), an optional Redis whose URL
    becomes `state.url`, then `replicas` proxies running `config(local, api)`."""
    with contextlib.ExitStack() as stack:
        if sims is None:
            sims = stack.enter_context(sim_pair(tmp_path, local_args, api_args))
        local, api = sims
        cfg = config(local, api)
        store = stack.enter_context(run_redis(tmp_path)) if redis else None
        if store is not None:
            cfg["state"] = {**cfg.get("state", {}), "url": store.url}
        proxies = stack.enter_context(run_replicas(tmp_path, cfg, replicas, proxy_args, env))
        yield Stack(proxies, local, api, store)
