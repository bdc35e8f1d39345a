"""Request bodies in a Content-Encoding (proxy/server/exchange.py decode_body): what is decoded,
what is refused, and that inflation stops at the limit."""

from __future__ import annotations

import gzip
import zlib

import pytest

from proxy.request.errors import ProxyError
from proxy.server.exchange import decode_body

BODY = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}'


def test_stacked_codings_are_undone_last_first() -> None:
    twice = gzip.compress(zlib.compress(BODY))
    assert decode_body(twice, b"deflate, gzip", 1024) == BODY
    assert decode_body(gzip.compress(BODY), b"identity, gzip", 1024) == BODY


def test_a_gzip_body_of_several_members_is_whole() -> None:
    half = len(BODY) // 2
    assert (
        decode_body(gzip.compress(BODY[:half]) + gzip.compress(BODY[half:]), b"gzip", 1024) == BODY
    )


@pytest.mark.parametrize("limit", [len(BODY), len(BODY) - 1])
def test_inflation_stops_at_the_limit(limit: int) -> None:
    data = gzip.compress(BODY)
    if limit >= len(BODY):
        assert decode_body(data, b"gzip", limit) == BODY
    else:
        with pytest.raises(ProxyError) as err:
            decode_body(data, b"gzip", limit)
        assert err.value.status == 413


def test_a_bomb_is_not_inflated_past_the_limit() -> None:
    bomb = zlib.compress(b"\0" * (64 * 1024 * 1024), 9)  # 64 MiB from ~64 KB
    with pytest.raises(ProxyError) as err:
        decode_body(bomb, b"deflate", 1024 * 1024)
    assert err.value.status == 413 and err.value.code == "request_too_large"


def test_an_unknown_coding_is_refused_before_any_decoding() -> None:
    with pytest.raises(ProxyError) as err:
        decode_body(b"not even gzip", b"br, gzip", 1024)
    assert err.value.status == 415
    assert "'br'" in err.value.message
    assert (b"accept-encoding", b"gzip, deflate") in err.value.headers


def test_trailing_bytes_after_a_zlib_stream_are_refused() -> None:
    with pytest.raises(ProxyError) as err:
        decode_body(zlib.compress(BODY) + b"junk", b"deflate", 1024)
    assert err.value.status == 400 and err.value.code == "invalid_body"
