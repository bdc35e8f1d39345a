"""The built-in dashboard in a real headless Chromium, against a proxy with live traffic."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.test_report import ADMIN, proxy_with_traffic
from tests.support.chromium import ARTIFACTS, chromium_binary, run_page
from tests.support.proxy import ProxyHandle

CHARTS = ("chart-spend", "chart-counterfactual", "chart-gpu", "chart-idle", "chart-breakeven")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHandle]:
    chromium_binary()  # skip early, before starting servers, if there is no browser
    with proxy_with_traffic(tmp_path_factory.mktemp("dashboard"), 8, 2, 2) as (handle, _):
        yield handle


def svg(dom: str, element_id: str) -> str:
    m = re.search(rf'<svg[^>]*id="{element_id}"[^>]*>(.*?)</svg>', dom, re.S)
    assert m, f"no <svg id={element_id}> in the page"
    return m.group(1)


def test_dashboard_draws_the_live_report(proxy: ProxyHandle) -> None:
    url = f"{proxy.url}/dashboard#key={ADMIN}"
    page = run_page(url)
    assert page.console == [], page.console  # the page logs nothing when all is well
    dom = page.output
    assert re.search(r'<main id="main"(?![^>]*hidden)', dom), "the report did not render"
    assert re.search(r'<section id="login"[^>]*hidden', dom)
    assert re.search(r'<pre id="errors"[^>]*hidden', dom)
    for chart in CHARTS:
        body = svg(dom, chart)
        points = [int(n) for n in re.findall(r'data-points="(\d+)"', body)]
        assert points and max(points) > 0, f"{chart} has no data points"
    breakeven = svg(dom, "chart-breakeven")
    today = re.search(r'class="marker today-marker"[^>]*data-x="([0-9.e+]+)"', breakeven)
    assert today and float(today.group(1)) > 0, "today's volume is not marked"
    assert 'class="marker breakeven-marker"' in breakeven
    assert "Break-even is at" in dom
    assert ADMIN not in dom  # the key left the address for sessionStorage
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    shot_run = run_page(url, dump_dom=False, screenshot=shot)
    assert shot_run.console == [], shot_run.console
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_dashboard_asks_for_the_admin_key(proxy: ProxyHandle) -> None:
    page = run_page(f"{proxy.url}/dashboard", budget_ms=3000)
    assert page.console == [], page.console
    assert re.search(r'<section id="login"(?![^>]*hidden)', page.output)
    assert re.search(r'<main id="main"[^>]*hidden', page.output)
    refused = run_page(f"{proxy.url}/dashboard#key=not-the-key", budget_ms=3000)
    assert re.search(r'<section id="login"(?![^>]*hidden)', refused.output)
    assert "This endpoint needs the admin key." in refused.output


def test_dashboard_assets(proxy: ProxyHandle) -> None:
    page = httpx.get(f"{proxy.url}/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name, kind in (("app.js", "text/javascript"), ("charts.js", "text/javascript"),
                       ("style.css", "text/css")):  # fmt: skip
        r = httpx.get(f"{proxy.url}/dashboard/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
    missing = httpx.get(f"{proxy.url}/dashboard/../../etc/passwd")
    assert missing.status_code == 404
    assert httpx.get(f"{proxy.url}/dashboard/nope.js").json()["error"]["code"] == "not_found"
