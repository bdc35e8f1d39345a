"""`hybridgate report --url URL [--window 24h] [--json]`: the live report of a running proxy.

The admin key comes from `--admin-key` or HYBRIDGATE_ADMIN_KEY. The table shows what a
finance-minded reader asks first (spend, GPU use, each scenario per month, the break-even
against today's volume), and `--json` prints every figure with its inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

WINDOWS = ("1h", "24h", "7d", "all")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="print the live cost report of a running proxy")
    p.add_argument("--url", required=True, help="the proxy, e.g. http://127.0.0.1:4000")
    p.add_argument("--window", default="24h", choices=WINDOWS, help="traffic window (24h)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--admin-key",
        default=None,
        help="auth.admin_key of the proxy (default: $HYBRIDGATE_ADMIN_KEY)",
    )
    p.set_defaults(func=run)


def fetch_report(url: str, window: str, admin_key: str | None, timeout: float = 30.0) -> Any:
    """GET /costs/report; raises SystemExit with a readable message on failure."""
    import httpx

    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    try:
        r = httpx.get(
            f"{url.rstrip('/')}/costs/report",
            params={"window": window},
            headers=headers,
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise SystemExit(f"hybridgate report: cannot reach {url}: {exc}") from None
    if r.status_code != 200:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        raise SystemExit(f"hybridgate report: HTTP {r.status_code} from {url}: {message}")
    return r.json()


def run(args: argparse.Namespace) -> int:
    key = args.admin_key or os.environ.get("HYBRIDGATE_ADMIN_KEY")
    if not key:
        print(
            "hybridgate report: needs the proxy's admin key: --admin-key K or HYBRIDGATE_ADMIN_KEY",
            file=sys.stderr,
        )
        return 2
    try:
        report = fetch_report(args.url, args.window, key)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console

    print_report(report, Console())
    return 0


# ---------------------------------------------------------------- rendering


def _usd(v: float | None) -> str:
    from costing.units import format_usd

    if v is None:
        return "–"
    if 0 < abs(v) < 1:  # a short window's spend: show fractions of a cent
        return f"{'-' if v < 0 else ''}${abs(v):,.4f}"
    return format_usd(v)


def _count(v: float | None) -> str:
    from proxy.live.compare import human_count

    return "–" if v is None else human_count(v)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _table(title: str, columns: tuple[str, ...], left: tuple[str, ...] = ()) -> Any:
    """A rich table whose first column (and `left` ones) align left, numbers right."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 or col in left else "right")
    return table


def _traffic_cells(label: str, row: dict[str, Any], money: dict[str, Any]) -> list[str]:
    return [
        label,
        *(f"{row[k]:,.0f}" for k in ("requests", "errors", "prompt_tokens", "completion_tokens")),
        _usd(money.get("actual_usd")),
        _usd(money.get("counterfactual_usd")),
    ]


def print_report(report: dict[str, Any], console: Any) -> None:
    """The report as rich tables: traffic, GPU pools, scenarios, break-even, advice."""
    from rich.panel import Panel

    inputs = report["inputs"]
    console.print(
        f"[bold]hybridgate live report[/] · window {report['window']} = "
        f"{_span(inputs['window_seconds'])} of traffic · months of "
        f"{inputs['hours_per_month']:g} h · {inputs['projection']}"
    )

    traffic = _table(
        "Traffic and spend in the window",
        ("backend", "requests", "errors", "prompt tok", "completion tok", "actual",
         "counterfactual"),
    )  # fmt: skip
    spend = report["spend"]["by_backend"]
    for name, row in report["traffic"]["by_backend"].items():
        money = spend.get(name, {})
        label = name + (" (GPU)" if money.get("self_hosted") else "")
        traffic.add_row(*_traffic_cells(label, row, money))
    s = report["spend"]
    traffic.add_row(*_traffic_cells("[bold]total[/]", report["traffic"], s))
    console.print(traffic)
    console.print(
        f"GPU fixed cost (idle + engineering) {_usd(s['gpu_fixed_usd'])}, of which idle GPUs "
        f"{_usd(s['gpu_idle_usd'])}; self-hosting saved {_usd(s['selfhosted_savings_usd'])} "
        "against the API price after fixed cost."
    )

    if report["pools"]:
        pools = _table(
            "GPU pools",
            ("pool", "GPUs", "utilization", "busy GPU-s", "provisioned GPU-s", "idle cost",
             "peak in flight"),
        )  # fmt: skip
        for name, p in report["pools"].items():
            pools.add_row(
                f"{name} ({p['billing']})",
                str(p["gpus"]),
                _pct(p["utilization"]),
                f"{p['busy_gpu_seconds']:,.1f}",
                f"{p['provisioned_gpu_seconds']:,.1f}",
                _usd(p["idle_usd"]),
                f"{p['peak_inflight']:.0f}",
            )
        console.print(pools)

    for c in report["comparisons"]:
        title = f"Monthly TCO: {', '.join(c['aliases'])} on pool {c['pool']} vs {c['api_model']}"
        if c["scenarios"]:
            table = _table(
                title,
                ("scenario", "USD/month", "GPUs", "GPU util.", "API share", "breakdown"),
                left=("breakdown",),
            )
            for name, sc in c["scenarios"].items():
                mark = " ✓" if name == c.get("cheapest") else ""
                table.add_row(
                    name + mark,
                    _usd(sc["monthly_usd"]),
                    str(sc["gpus"]),
                    _pct(sc["utilization"]),
                    _pct(sc["api_share"]),
                    ", ".join(f"{k} {_usd(v)}" for k, v in sc["breakdown"].items()),
                )
            console.print(table)
            prof = c["profile"]
            cap = c["capacity"]
            console.print(
                f"Profile: {_count(prof['requests_per_month'])} requests/month, "
                f"{prof['prompt_tokens_per_request']:.1f} prompt + "
                f"{prof['completion_tokens_per_request']:.1f} completion tokens/request, "
                f"peak/average {prof['peak_to_average']:.2f} "
                f"(per {c['load_curve_interval_seconds']} s); capacity "
                f"{cap['tokens_per_gpu_s'] or 0:,.0f} tokens/GPU-s ({cap['source']})."
            )
            be = c["breakeven"]
            if be is not None and be["requests_per_month"] is not None:
                console.print(
                    f"Break-even: [bold]{be['requests_per_month']:,}[/] requests/month "
                    f"({_count(be['requests_per_month'])}); today "
                    f"{_count(prof['requests_per_month'])}"
                    + (
                        f"; crosses back {be['cross_backs']}×, for good from "
                        f"{be['settled_requests_per_month']:,}"
                        if be["crosses_back"]
                        else ""
                    )
                )
            elif be is not None:
                console.print("Break-even: none (self-hosting never pays back at this mix).")
        else:
            console.print(f"[bold]{title}[/]")
    console.print(Panel(report["recommendation"], title="Recommendation", expand=False))
    for note in report.get("notes", []):
        console.print(f"[dim]note: {note}[/]")
