"""Failover triggers, stream and non-stream, against real simulator processes.

The self-hosted simulator is made to fail in one way at a time (its fault knobs); the
proxy must move the request to the API simulator exactly when the issue says so, and
the books must say what happened: one failover with its reason, one request served.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.proxy import ProxyHandle, metric_value
from tests.support.routing import Answer, ask, chat_count, content_events, hybrid_stack
from tests.support.servers import free_port
from tests.support.sim import SimHandle

LONG = [{"role": "user", "content": "tokens " * 400}]  # ~700 simulator tokens > 512


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProxyHandle, SimHandle, SimHandle]]:
    with hybrid_stack(
        tmp_path_factory.mktemp("failover"),
        local_args=["--speed", "20", "--max-model-len", "512"],
        local_backend={"timeouts": {"read_s": 1.0}},
        backends={
            "dead": {
                "base_url": f"http://127.0.0.1:{free_port()}/v1",
                "pool": "h100",
                "timeouts": {"connect_s": 1},
            }
        },
        models={
            "cold": {
                "targets": [
                    {"backend": "dead", "model": "sim-model"},
                    {"backend": "api", "model": "gpt-4o-mini"},
                ]
            },
            "narrow": {
                "targets": [
                    {"backend": "local", "model": "sim-model", "context_window": 100000},
                    {"backend": "api", "model": "gpt-4o-mini", "context_window": 4096},
                ]
            },
            "hurry": {
                "timeout_s": 0.6,
                "targets": [
                    {"backend": "local", "model": "sim-model"},
                    {"backend": "api", "model": "gpt-4o-mini"},
                ],
            },
        },
        # Windows are learned from the engine only when scraping: off here, so a
        # too-long prompt reaches the simulator and its 400 is what fails over.
        engine_metrics={"enabled": False},
        health_checks={"enabled": False},  # the trigger itself must meet each request
    ) as stack:
        yield stack


@pytest.fixture
def proxy(stack: tuple[ProxyHandle, SimHandle, SimHandle]) -> Iterator[ProxyHandle]:
    p, local, api = stack
    yield p
    local.clear_faults()
    api.clear_faults()


@pytest.fixture
def local(stack: tuple[ProxyHandle, SimHandle, SimHandle]) -> SimHandle:
    return stack[1]


@pytest.fixture
def api(stack: tuple[ProxyHandle, SimHandle, SimHandle]) -> SimHandle:
    return stack[2]


class Books:
    """Counters before a request, to compare with after."""

    def __init__(self, proxy: ProxyHandle, local: SimHandle, api: SimHandle) -> None:
        self.proxy, self.local, self.api = proxy, local, api
        self.text = proxy.metrics_text()
        self.api_chats = chat_count(api)
        self.local_status = local.stats(detail=False)["responses_by_status"]

    def failovers(self, reason: str, backend: str = "local") -> float:
        now = self.proxy.metric("hybridgate_failovers_total", from_backend=backend, reason=reason)
        before = metric_value(
            self.text, "hybridgate_failovers_total", from_backend=backend, reason=reason
        )
        return now - before

    def requests(self, **labels: str) -> float:
        now = self.proxy.metric("hybridgate_requests_total", **labels)
        return now - metric_value(self.text, "hybridgate_requests_total", **labels)

    def api_delta(self) -> int:
        return chat_count(self.api) - self.api_chats

    def local_answered(self, status: int) -> int:
        now = self.local.stats(detail=False)["responses_by_status"]
        return now.get(str(status), 0) - self.local_status.get(str(status), 0)


def assert_failed_over(
    books: Books, a: Answer, reason: str, alias: str = "chat", backend: str = "local"
) -> None:
    assert a.status == 200, a.text
    assert a.backend == "api" and a.attempts == 2
    assert a.text  # a real answer, from the API simulator
    if a.events:
        assert a.done and a.error is None
    assert books.failovers(reason, backend) == 1
    assert books.api_delta() == 1
    assert books.requests(alias=alias) == 1  # one request, one UsageEvent
    assert books.requests(alias=alias, backend="api", outcome="success") == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 529])
def test_status_triggers_fail_over(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle, status: int, stream: bool
) -> None:
    local.set_faults(status=status, count=1)
    books = Books(proxy, local, api)
    a = ask(proxy.base_url, stream)
    assert books.local_answered(status) == 1  # the self-hosted simulator really failed
    assert_failed_over(books, a, str(status))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_connect_error_fails_over(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle, stream: bool
) -> None:
    books = Books(proxy, local, api)
    a = ask(proxy.base_url, stream, model="cold")  # its first backend's port is closed
    assert_failed_over(books, a, "connect_error", alias="cold", backend="dead")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_slow_first_token_times_out_and_fails_over(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle, stream: bool
) -> None:
    local.set_faults(slow_first_token_s=5)  # the backend's read timeout is 1 s
    books = Books(proxy, local, api)
    a = ask(proxy.base_url, stream)
    assert_failed_over(books, a, "timeout")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_context_length_400_goes_to_a_larger_window(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle, stream: bool
) -> None:
    books = Books(proxy, local, api)
    a = ask(proxy.base_url, stream, messages=LONG)
    assert books.local_answered(400) == 1
    assert_failed_over(books, a, "context_length")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_context_length_400_without_a_larger_window_goes_back(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle, stream: bool
) -> None:
    books = Books(proxy, local, api)
    a = ask(proxy.base_url, stream, model="narrow", messages=LONG)
    assert a.status == 400 and "maximum context length" in a.error["message"]
    # The engine's answer, with our headers like any other a backend gave.
    assert (a.backend, a.attempts) == ("local", 1)
    assert books.api_delta() == 0
    assert books.failovers("context_length") == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("status", [400, 422])
def test_client_errors_do_not_fail_over(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle, status: int, stream: bool
) -> None:
    local.set_faults(status=status, count=1)
    books = Books(proxy, local, api)
    a = ask(proxy.base_url, stream)
    assert a.status == status and a.backend == "local" and a.attempts == 1
    assert a.error is not None and a.error["message"]
    assert books.api_delta() == 0
    assert books.requests(alias="chat", backend="local", outcome="error") == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_quota_exhaustion_429_does_not_fail_over(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle, stream: bool
) -> None:
    local.set_faults(
        status=429,
        count=1,
        error_shape="openai",
        error_type="insufficient_quota",
        error_code="insufficient_quota",
    )
    books = Books(proxy, local, api)
    a = ask(proxy.base_url, stream)
    assert a.status == 429 and a.error["code"] == "insufficient_quota"
    assert a.attempts == 1 and books.api_delta() == 0


def test_stream_cut_after_k_events_ends_with_an_error_event_and_meters_what_was_sent(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle
) -> None:
    local.set_faults(cut_stream_after=4)  # the role event and three tokens
    books = Books(proxy, local, api)
    a = ask(proxy.base_url, True, max_tokens=12)
    assert a.status == 200 and a.backend == "local"
    assert not a.done  # no [DONE] hiding the cut
    assert a.events[-1]["error"]["code"] == "stream_interrupted"
    sent = content_events(a.events)
    assert sent == 3
    assert books.api_delta() == 0  # past the first event there is no failover
    assert books.requests(alias="chat", backend="local", outcome="cut") == 1
    completion = proxy.metric("hybridgate_tokens_total", backend="local", kind="completion")
    before = metric_value(books.text, "hybridgate_tokens_total", backend="local", kind="completion")
    assert completion - before == sent


def test_stream_cut_before_the_first_event_fails_over(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle
) -> None:
    local.set_faults(cut_stream_after=0)  # headers, then the connection drops
    books = Books(proxy, local, api)
    a = ask(proxy.base_url, True)
    assert_failed_over(books, a, "connect_error")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_retry_after_of_the_last_target_reaches_the_client(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle, stream: bool
) -> None:
    local.set_faults(status=503, count=1, retry_after=7)
    api.set_faults(status=429, count=1, retry_after=11)
    books = Books(proxy, local, api)
    a = ask(proxy.base_url, stream)
    assert a.status == 429 and a.backend == "api" and a.attempts == 2
    assert a.retry_after == "11"
    assert books.failovers("503") == 1


def test_the_deadline_bounds_all_attempts(
    proxy: ProxyHandle, local: SimHandle, api: SimHandle
) -> None:
    # Both would answer after 5 s; without the alias's 0.6 s deadline the API (no read
    # timeout) would eventually answer 200.
    local.set_faults(slow_first_token_s=5)
    api.set_faults(slow_first_token_s=5)
    a = ask(proxy.base_url, model="hurry")
    assert a.status == 504 and a.error["code"] == "timeout"
