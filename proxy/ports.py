"""A loopback port for a server we are about to start (the demo's, the tests').

A port from `bind(("127.0.0.1", 0))` is ephemeral: the kernel hands the same range to every
outgoing connection, so between the check and the server's own bind a connection (the
proxy's to an upstream, a download beside it) can take it, and the server dies with
"address already in use". Below the ephemeral range only servers bind, so the ports come
from there, at random, each handed out once per process. Parallel test workers (pytest-xdist
sets PYTEST_XDIST_WORKER=gwN and PYTEST_XDIST_WORKER_COUNT) each draw from their own residue
class modulo the worker count, so two workers never pick the same port; the servers a worker
starts inherit its environment and stay in its slice.
"""

from __future__ import annotations

import os
import random
import socket

_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
_LOWEST = 10000
_rng = random.SystemRandom()  # not the global RNG, which tests may seed
_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections (Linux's default when unreadable)."""
    try:
        with open(_RANGE_FILE) as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def bindable(port: int) -> bool:
    """Nothing on 127.0.0.1 holds `port` now (listening, or connected from it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_slice() -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker; (0, 1) outside xdist or when unparsable."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        index = int(worker.removeprefix("gw"))
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", ""))
    except ValueError:
        return 0, 1
    return (index, count) if 0 <= index < count else (0, 1)


def free_port(preferred: int = 0) -> int:
    """`preferred` if it is free, else a free port below the ephemeral range (in this worker's
    slice of it, see worker_slice)."""
    if preferred and bindable(preferred):
        return preferred
    low, _ = ephemeral_range()
    index, count = worker_slice()
    slots = (low - _LOWEST - index) // count
    for _ in range(200 if slots >= 1000 else 0):
        port = _LOWEST + index + count * _rng.randrange(slots)
        if port not in _handed_out and bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a tiny or odd range
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
