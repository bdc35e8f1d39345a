"""Hot reload: `SIGHUP` or `POST /admin/reload` re-read the config file without a restart.

A valid new config becomes a new Runtime; the app's reference is swapped, so new
requests use it while requests in flight finish on the runtime they started with
(the handler holds it). The old runtime is retired once its last request is done.

What carries over, so the books stay exact: the Metrics registry and the Meter (its
sinks, and its GPU pool accounts with the shares in flight: a pool's provisioned and
busy GPU-seconds never restart), the in-flight counts, and, for each backend whose
config did not change, its connection pool, concurrency limit, breaker, health and
engine figures. The Meter takes the new prices for requests that finish from now on.

An invalid config is refused with every problem listed, and the old one keeps running.
Some changes cannot be applied live and are refused or reported: removing a GPU pool or
changing its GPU count (its GPU-second books are running: restart instead); `listen`
and `state` (they take effect at the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from proxy.config import Config, ConfigError, load_config, warnings_for
from proxy.metering.pricing import load_prices, price_problems
from proxy.runtime import Runtime

log = logging.getLogger("hybridgate.reload")

DRAIN_GRACE_S = 5.0  # beyond the request timeout, before an old runtime is closed anyway


def live_problems(old: Config, new: Config) -> list[str]:
    """Changes a running proxy cannot take without a restart (the reload is refused)."""
    problems = []
    for name, pool in old.gpu_pools.items():
        if name not in new.gpu_pools:
            problems.append(
                f"gpu_pools.{name}: removing a GPU pool needs a restart "
                f"(its GPU-second books are running)"
            )
        elif new.gpu_pools[name].gpus != pool.gpus:
            problems.append(
                f"gpu_pools.{name}.gpus: changing a pool's GPU count ({pool.gpus} -> "
                f"{new.gpu_pools[name].gpus}) needs a restart (its GPU-second books are running)"
            )
    return problems


def restart_warnings(old: Config, new: Config) -> list[str]:
    """Changes that are accepted but only take effect at the next start."""
    out = []
    if old.listen != new.listen:
        out.append("listen: changed; the proxy keeps its address until restarted")
    if old.state != new.state:
        out.append("state: changed; the state store is chosen at start, restart to switch")
    return out


class Reloader:
    def __init__(self, gate: Any, config_path: str | None) -> None:
        self.gate = gate
        self.config_path = config_path
        self.reloads = 0
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    async def reload(self) -> tuple[bool, list[str]]:
        """(True, warnings) after a swap, or (False, problems) with the old config kept."""
        if self.config_path is None:
            return False, ["<file>: the proxy was started without a config file to re-read"]
        async with self._lock:
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                return False, exc.problems
            prices = await asyncio.to_thread(load_prices, config)
            old: Runtime = self.gate.runtime
            problems = live_problems(old.config, config)
            if problems:
                return False, problems
            for warning in price_problems(config, prices):  # served, counted as unpriced
                log.warning("%s", warning)
            try:
                new = Runtime(config, self.gate.metrics, prices, meter=old.meter, previous=old)
            except Exception as exc:
                log.exception("building the new runtime failed")
                return False, [f"<runtime>: {type(exc).__name__}: {exc}"]
            old.meter.reconfigure(config, prices)
            await new.start()
            self.gate.runtime = new
            await old.control.stop()  # one set of probes at a time
            task = asyncio.create_task(self._retire(old, new))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            self.reloads += 1
            log.warning("config reloaded from %s", self.config_path)
            return True, warnings_for(config) + restart_warnings(old.config, config)

    async def _retire(self, old: Runtime, new: Runtime) -> None:
        """Wait for the old runtime's requests to finish, then close what only it used."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + old.config.limits.request_timeout_s + DRAIN_GRACE_S
        while old.requests_inflight > 0 and loop.time() < give_up:
            await asyncio.sleep(0.05)
        await old.retire(new)
        metrics = self.gate.metrics
        for name in set(old.config.backends) - set(new.config.backends):
            for gauge in (metrics.inflight, metrics.backend_up, metrics.breaker_open):
                with contextlib.suppress(KeyError):
                    gauge.remove(name)

    async def close(self) -> None:
        """At shutdown: retire old runtimes now."""
        for task in list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def install_signal_handler(self) -> None:
        """SIGHUP re-reads the config (where the platform and the thread allow it)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self._reload_and_log())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _reload_and_log(self) -> None:
        ok, notes = await self.reload()
        if ok:
            for note in notes:
                log.warning("%s", note)
        else:
            log.error(
                "config reload refused, the running config stays (%d problem(s)):\n  %s",
                len(notes),
                "\n  ".join(notes),
            )


def register_routes(app: FastAPI, gate: Any) -> None:
    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> JSONResponse:
        """Re-read the config file (admin key). 400 with every problem if it is refused."""
        gate.runtime.auth.require_admin(dict(request.scope["headers"]))
        ok, notes = await gate.reloader.reload()
        if ok:
            return JSONResponse(
                {"status": "reloaded", "reloads": gate.reloader.reloads, "warnings": notes}
            )
        message = (
            f"The config was refused ({len(notes)} problem(s)); the running config is "
            f"unchanged: " + "; ".join(notes)
        )
        return JSONResponse(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_config",
                    "problems": notes,
                }
            },
            status_code=400,
        )
