"""proxy/server/protocol.py subclasses uvicorn's httptools protocol and overrides some of its
methods, two of them private. uvicorn is pinned to a tested range in pyproject.toml; this
test fails when the uvicorn installed is not the one those overrides were read against,
so raising the pin means re-reading each changed method beside our override first.

To update after such a reading: run this file, and put the printed fingerprints in
TESTED (with the version they were read on)."""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from proxy.server.protocol import guarded_protocol

TESTED_ON = "0.55.0"
# uvicorn's methods we override: sha256 of their source in TESTED_ON, first 16 hex digits.
TESTED = {
    "_start_asgi_task": "8d0189e65525db42",
    "_unset_keepalive_if_required": "00a6a4e47214e68e",
    "connection_lost": "c91a4c9bf2e29c55",
    "connection_made": "6efb565ff3d36b91",
    "data_received": "010a7ae59a5d3b1a",
    "on_body": "dba9c32aeba35b6a",
    "on_headers_complete": "1ea8589acfad92d8",
    "on_message_begin": "96d377fdc7c2baef",
    "on_message_complete": "1fbad42dc31fc01f",
    "on_response_complete": "64e254f28e389e76",
}
CALLERS = ("on_url", "on_header", "shutdown")
# uvicorn's methods our overrides call.
CALLED = ("_should_upgrade", "handle_websocket_upgrade", "send_400_response")
# proxy/server/protocol.py's _Http10Cycle overrides RequestResponseCycle.send and sets the state
# it reads (chunked_encoding, expected_content_length, keep_alive) before calling it.
CYCLE_TESTED = {"send": "abdd8601b326a8da"}


def fingerprint(name: str, cls: type = HttpToolsProtocol) -> str:
    source = inspect.getsource(getattr(cls, name))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def overridden() -> set[str]:
    ours = guarded_protocol(10.0, 60.0, 30.0)
    return {
        n
        for n in vars(ours)
        if not n.startswith("__") and callable(getattr(HttpToolsProtocol, n, None))
    }


def test_every_override_was_read_against_uvicorn() -> None:
    """A new override of a uvicorn method needs its fingerprint here (and a reading)."""
    assert overridden() == set(TESTED), "update TESTED: " + str(
        {n: fingerprint(n) for n in sorted(overridden())}
    )


@pytest.mark.parametrize("name", sorted(TESTED))
def test_uvicorn_methods_we_override_are_unchanged(name: str) -> None:
    got = fingerprint(name)
    assert got == TESTED[name], (
        f"uvicorn {version('uvicorn')}'s HttpToolsProtocol.{name} differs from {TESTED_ON}'s: "
        f"read it beside proxy/server/protocol.py's override, then set TESTED[{name!r}] = {got!r}"
    )


def test_the_callers_of_our_overrides_still_exist() -> None:
    """uvicorn's own methods that drive ours; a rename would leave our overrides dead."""
    for name in CALLERS + CALLED:
        assert callable(getattr(HttpToolsProtocol, name, None)), name


@pytest.mark.parametrize("name", sorted(CYCLE_TESTED))
def test_the_cycle_methods_we_override_are_unchanged(name: str) -> None:
    got = fingerprint(name, RequestResponseCycle)
    assert got == CYCLE_TESTED[name], (
        f"uvicorn {version('uvicorn')}'s RequestResponseCycle.{name} differs from "
        f"{TESTED_ON}'s: read it beside proxy/server/protocol.py's _Http10Cycle, then set "
        f"CYCLE_TESTED[{name!r}] = {got!r}"
    )


def test_uvicorn_is_the_version_the_pin_names() -> None:
    major_minor = ".".join(version("uvicorn").split(".")[:2])
    assert major_minor == ".".join(TESTED_ON.split(".")[:2])
