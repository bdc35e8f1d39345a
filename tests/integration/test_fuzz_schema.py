"""Schemathesis against the proxy's own OpenAPI document, served by a real `hybridgate serve`.

The document (proxy/server/openapi.py) describes the OpenAI routes of the raw-ASGI fast path as
well as the FastAPI ops routes, so generated cases reach both. Positive cases follow the
schema; negative ones break it. Either way the proxy must never answer 5xx itself, must
answer every non-2xx in OpenAI's error shape, and its answers must match the document
(status codes, content types, bodies, 405 for undocumented methods, 401 without a key).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.support.fuzz import (
    ALIASES,
    Tally,
    admin_headers,
    check_answer,
    client_headers,
    fuzz_stack,
)
from tests.support.proxy import ProxyHandle

CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# These send requests of their own (other methods, no key): once per operation is enough.
ONCE_PER_OPERATION = [unsupported_method, ignored_auth]
ADMIN_PATHS = ("/admin/", "/costs/")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHandle]:
    with fuzz_stack(tmp_path_factory.mktemp("fuzz-schema")) as p:
        yield p


@pytest.fixture(scope="module")
def schema(proxy: ProxyHandle) -> Any:
    return schemathesis.openapi.from_url(f"{proxy.url}/openapi.json", headers=client_headers())


def test_the_document_describes_the_openai_routes(proxy: ProxyHandle) -> None:
    doc = httpx.get(f"{proxy.url}/openapi.json", headers=client_headers()).json()
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    body = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert body["required"] == ["model", "messages"] and body["additionalProperties"] is True
    assert sorted(body["properties"]["model"]["enum"]) == sorted(ALIASES)
    for field in ("stream", "stream_options", "max_tokens", "metadata", "user", "tools"):
        assert field in body["properties"]
    assert set(doc["components"]["schemas"]["StreamOptions"]["properties"]) == {
        "include_usage",
        "continuous_usage_stats",
    }
    assert {"application/json", "text/event-stream"} == set(chat["responses"]["200"]["content"])
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]
    for status in ("400", "401", "404", "413", "429", "502", "503", "504"):
        assert chat["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    for path in ("/v1/completions", "/v1/embeddings"):
        assert doc["paths"][path]["post"]["security"] == [{"apiKey": []}]
    assert doc["paths"]["/costs/report"]["get"]["security"] == [{"adminKey": []}]
    assert "422" not in doc["paths"]["/costs/report"]["get"]["responses"]
    # Without a key the document does not name the aliases (as /v1/models would not).
    public = httpx.get(f"{proxy.url}/openapi.json")
    assert (
        "enum"
        not in public.json()["components"]["schemas"]["ChatCompletionRequest"]["properties"][
            "model"
        ]
    )
    assert not any(f'"{alias}"' in public.text for alias in ALIASES)
    # Other methods on an OpenAI route: an OpenAI-shaped 405, not a 404.
    r = httpx.get(f"{proxy.base_url}/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"


# Examples per operation: every operation of the document gets its share (a union strategy
# over all of them left the share to chance), with a fixed seed (derandomize) so a run is
# reproducible. Body generation for the big request schemas dominates the cost.
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 12}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_schemathesis(proxy: ProxyHandle, schema: Any, mode: GenerationMode) -> None:
    tally = Tally()
    session = requests.Session()
    probed: set[str] = set()
    t0 = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    with_inputs = {op.label for op in operations if list(op.iter_parameters()) or op.body}
    no_cases: set[str] = set()

    def fuzz_operation(operation: Any) -> None:
        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: Any) -> None:
            admin = case.path.startswith(ADMIN_PATHS)
            headers = admin_headers() if admin else client_headers()
            r = case.call(session=session, headers=headers, timeout=30)
            answer_headers = {k.lower(): v[0] for k, v in r.headers.items()}
            anthropic = case.path.startswith(("/v1/messages", "/messages"))
            check_answer(r.status_code, answer_headers, r.content, tally, anthropic)
            # An id the tenant never stored (a stored response's routes: 404; a turn
            # continuing one: 400 previous_response_not_found) is valid input, rightly refused.
            unknown_id = (r.status_code == 404 and "{response_id}" in case.path) or (
                r.status_code == 400 and b'"previous_response_not_found"' in r.content
            )
            if mode is GenerationMode.POSITIVE and r.status_code >= 400 and not unknown_id:
                # What the document calls valid, the proxy accepts: only an upstream may refuse it.
                assert "x-hybridgate-backend" in answer_headers, (case.path, r.text[:300])
            checks = CHECKS
            if case.operation.label not in probed:
                probed.add(case.operation.label)
                checks = CHECKS + ONCE_PER_OPERATION
            case.validate_response(r, checks=checks, headers=headers)

        try:
            fuzz()
        except Unsatisfiable:  # nothing to break in an operation without inputs
            no_cases.add(operation.label)

    for operation in operations:
        fuzz_operation(operation)
    session.close()
    print(tally.summary(f"schemathesis {mode.value}", time.monotonic() - t0))
    assert tally.statuses[200] > 0 and tally.statuses[400] > 0
    # Every operation was reached (the OpenAI, Anthropic and ops routes), and only the
    # input-less ones have no negative cases.
    assert len(operations) >= 12
    assert probed == {op.label for op in operations} - no_cases
    assert not no_cases & with_inputs
    if mode is GenerationMode.POSITIVE:
        assert not no_cases
