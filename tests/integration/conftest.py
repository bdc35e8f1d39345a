"""Fixtures for integration tests: real servers on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.sim import SimHandle, run_simulator


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[..., SimHandle]]:
    """Factory: `simulator(mode="vllm", args=[...], port=None)` starts one; all stop at teardown."""
    with contextlib.ExitStack() as stack:

        def start(
            mode: str = "vllm",
            args: Sequence[str] = (),
            port: int | None = None,
            name: str = "sim",
        ) -> SimHandle:
            return stack.enter_context(run_simulator(tmp_path, mode, port, args, name))

        yield start
