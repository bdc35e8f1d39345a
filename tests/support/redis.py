"""A throwaway redis-server on a free loopback port, never the system one.

    with run_redis(tmp_path) as r:
        config["state"] = {"url": r.url}
        r.stop(); ...; r.start()      # same port, same data (SHUTDOWN SAVE, then reload)

Started with `--save "" --appendonly no`: nothing is written while it runs. `stop()`
saves a snapshot on the way down (as a Redis with persistence would keep its data
across a restart), `kill()` loses everything (SIGKILL), `pause()`/`resume()` freeze it
(SIGSTOP/SIGCONT: connections hang instead of being refused).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.servers import ManagedProcess, free_port

REDIS_SERVER = shutil.which("redis-server")


class RedisHandle:
    def __init__(self, tmp_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tmp_path) / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self, timeout: float = 10.0) -> RedisHandle:
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.dir),
            "--dbfilename", "dump.rdb", "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip
        self.process = ManagedProcess(args, self.dir / "redis.log")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.client() as c:
                    c.ping()
                return self
            except redis.RedisError:
                if not self.process.alive() or time.monotonic() > deadline:
                    log = self.process.log_text()[-2000:]
                    self.process.stop()
                    raise RuntimeError(f"redis-server did not start\n{log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Shut down after saving a snapshot; `start()` brings the same data back."""
        if self.process is None or not self.process.alive():
            return
        with contextlib.suppress(redis.RedisError), self.client() as c:
            c.shutdown(save=True)
        with contextlib.suppress(Exception):
            self.process.proc.wait(timeout=10)
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL: a crash without persistence, the data is gone."""
        if self.process is not None:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
            self.process.kill()
            self.process.stop()

    def pause(self) -> None:
        if self.process is not None:
            self.process.signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None:
            self.resume()
            self.process.stop()


@contextlib.contextmanager
def run_redis(tmp_path: Path, port: int | None = None) -> Iterator[RedisHandle]:
    """A running redis-server on loopback, stopped (and its data dropped) whatever happens."""
    handle = RedisHandle(tmp_path, port).start()
    try:
        yield handle
    finally:
        handle.close()
