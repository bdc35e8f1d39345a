"""Ports for the servers the demo and the tests start: free, and outside the range the
kernel gives outgoing connections (which could take a port between pick and bind)."""

from __future__ import annotations

import socket

import pytest

from proxy.ports import _LOWEST, bindable, ephemeral_range, free_port


def test_ports_are_free_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    low, high = ephemeral_range()
    assert 0 < low <= high
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    for port in ports:
        assert port < low and bindable(port)


def test_a_preferred_port_is_taken_only_when_nothing_holds_it() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        held = s.getsockname()[1]
        assert not bindable(held)
        other = free_port(held)
        assert other != held and bindable(other)
    assert free_port(held) == held  # released: free again


def test_parallel_test_workers_draw_ports_from_disjoint_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: two pytest-xdist workers each handed out random ports from the same range,
    so both could pick one port and one server died with "address already in use"."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    seen: dict[int, set[int]] = {}
    for index in (0, 1):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        seen[index] = {free_port() for _ in range(100)}
    assert {p % 2 for p in seen[0]} == {_LOWEST % 2}
    assert {p % 2 for p in seen[1]} == {(_LOWEST + 1) % 2}
