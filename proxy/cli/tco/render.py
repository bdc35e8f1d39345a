"""`tco` as rich tables and panels on the terminal (the default output)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from costing.breakeven import BreakevenResult
    from costing.seed import SeedComparison
    from costing.tco import ScenarioResult
    from proxy.cli.tco.assumptions import Assumptions
    from proxy.cli.tco.scenarios import Row

_MIN_WIDTH = 100  # columns the sweep table needs


def print_text(
    a: Assumptions,
    main: Row,
    sweep: Sequence[Row],
    be: BreakevenResult | None,
    seed: SeedComparison | None,
    show_sweep: bool,
    show_breakeven: bool,
) -> None:
    """The whole text report, in order: assumptions, the table(s), the seed, the breakeven."""
    from rich.console import Console

    console = Console()
    if console.width < _MIN_WIDTH:  # a pipe or a narrow terminal: never squeeze out numbers
        console = Console(width=_MIN_WIDTH)
    _render_assumptions(console, a, sweep=bool(show_sweep))
    if show_sweep:
        _render_sweep(console, a, sweep)
        if be is not None and not show_breakeven:
            console.print(_breakeven_headline(be) + " (--breakeven shows why)")
            console.print()
    else:
        _render_single(console, a, main)
    if seed is not None:
        _render_seed(console, seed)
    if be is not None and show_breakeven:
        _render_breakeven(console, be)


def _usd(x: float) -> str:
    from costing.units import format_usd

    return format_usd(x)


def _delta(x: float) -> str:
    text = _usd(x)
    return text if text.startswith("-") or text == "$0.00" else "+" + text


def _pct(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.1%}" if x >= 0.001 else f"{x:.3%}"


_LABELS = {
    "api_only": "API-only",
    "selfhosted_busy_only": "Busy GPU-seconds only (seed formula)",
    "selfhosted_only": "Self-hosted-only",
    "hybrid_current": "Hybrid, configured",
    "hybrid_optimal": "Hybrid, optimal",
}


def _scenario_label(key: str, r: ScenarioResult, a: Assumptions) -> str:
    if key == "selfhosted_busy_only":
        return _LABELS[key]
    if key == "selfhosted_only":
        kind = {
            "rental": "rented, always on",
            "purchase": "bought, always on",
            "serverless": "serverless",
        }[a.pool.billing]
        return f"Self-hosted-only ({kind})"
    if key in ("hybrid_current", "hybrid_optimal"):
        return f"{_LABELS[key]} (k={r.gpus}, rest to API)"
    return f"API-only ({a.api_label})"


def _render_assumptions(console: Console, a: Assumptions, sweep: bool = False) -> None:
    from rich.table import Table

    pr = a.profile
    pool = a.pool
    table = Table(title="Assumptions", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    tokens = (
        f"{pr.prompt_tokens_per_request:g} prompt + {pr.completion_tokens_per_request:g} "
        f"completion tokens/request"
    )
    if pr.cached_tokens_per_request:
        tokens += f" ({pr.cached_tokens_per_request:g} prompt tokens cached)"
    shape = (
        "flat load"
        if pr.load_curve is None
        else f"{len(pr.load_curve)}-interval load curve, peak/average {pr.peak_to_average:.2f}"
    )
    volume = "volumes in the table" if sweep else f"{a.requests:,} requests/month"
    table.add_row("Traffic", f"{volume}; {tokens}; {shape}")
    p = a.api.price
    table.add_row(
        "API",
        f"{a.api_label}: input ${p.input * 1e6:g}/1M, output ${p.output * 1e6:g}/1M"
        + (f", cached ${p.cached_input * 1e6:g}/1M" if p.cached_input is not None else ""),
    )
    if pool.billing == "rental":
        price = f"rented at ${pool.usd_per_gpu_hour:,.2f}/GPU-hour"
    elif pool.billing == "purchase":
        price = (
            f"bought at ${pool.purchase_usd_per_gpu:,.0f}/GPU over {pool.amortize_months:g} "
            f"months, {pool.power_kw_per_gpu:g} kW × ${pool.usd_per_kwh:g}/kWh, "
            f"hosting ${pool.hosting_usd_per_month:,.2f}/month"
        )
    else:
        price = (
            f"serverless at ${pool.serverless_usd_per_gpu_second:.6g}/GPU-second, "
            f"{pool.cold_starts_per_month:g} cold starts × {pool.cold_start_seconds:g} s/month"
        )
    capacity = []
    if pool.capacity_requests_per_s is not None:
        capacity.append(f"{pool.capacity_requests_per_s:g} req/s")
    if pool.capacity_tokens_per_s is not None:
        capacity.append(f"{pool.capacity_tokens_per_s:g} tokens/s")
    table.add_row(
        "GPU",
        f"{a.pool_label}: {price}; capacity {' and '.join(capacity)} per GPU; sized for "
        f"{a.target_utilization:.0%} busy at peak",
    )
    e = a.engineering
    table.add_row(
        "Engineering",
        f"{e.setup_hours:g} h setup × ${e.hourly_rate_usd:g} / {e.amortize_months:g} months + "
        f"{e.maintenance_hours_per_month:g} h/month × ${e.hourly_rate_usd:g} = "
        f"{_usd(e.monthly_cost())}/month",
    )
    if a.fine_tuning is not None:
        table.add_row("Fine-tuning", f"{_usd(a.fine_tuning.monthly_cost())}/month amortised")
    table.add_row("Month", f"{a.hours_per_month:g} hours ({a.hours_source})")
    for note in a.notes:
        table.add_row("Note", note)
    console.print(table)
    console.print()


def _table(
    title: str, headers: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]], **kw: Any
) -> Any:
    """A rich Table; columns of kind "num" (right-aligned) and "word" are never wrapped or
    truncated, "text" columns fold."""
    from rich.table import Table

    table = Table(title=title, **kw)
    for i, (header, kind) in enumerate(headers):
        if kind == "text":
            table.add_column(header, overflow="fold")
        else:
            width = max([len(r[i]) for r in rows] or [1])
            table.add_column(
                header,
                justify="right" if kind == "num" else "left",
                no_wrap=True,
                min_width=width,
            )
    for r in rows:
        table.add_row(*r)
    return table


def _render_single(console: Console, a: Assumptions, row: Row) -> None:
    scenarios = row.scenarios()
    api_usd = row.api_only.monthly_usd
    rows = [
        (
            _scenario_label(key, r, a),
            f"{r.hours_per_month:g} h",
            _usd(r.monthly_usd),
            "–" if key == "api_only" else _delta(r.monthly_usd - api_usd),
            str(r.gpus) if r.gpus else "–",
            _pct(r.utilization),
            f"{r.api_share:.0%}",
        )
        for key, r in scenarios.items()
    ]
    headers = [
        ("Scenario", "text"),
        ("Month", "word"),
        ("USD/month", "num"),
        ("vs API", "num"),
        ("GPUs", "num"),
        ("GPU util.", "num"),
        ("To API", "num"),
    ]
    console.print(_table(f"Monthly cost at {row.requests:,} requests/month", headers, rows))

    parts: list[str] = []
    for r in scenarios.values():
        parts.extend(k for k in r.breakdown if k not in parts)
    short = {
        "api_only": "API",
        "selfhosted_busy_only": "Busy-only",
        "selfhosted_only": "Self-hosted",
        "hybrid_current": "Hybrid (cfg)",
        "hybrid_optimal": "Hybrid (opt)",
    }
    bd_rows = [
        (
            part,
            *(_usd(r.breakdown[part]) if part in r.breakdown else "" for r in scenarios.values()),
        )
        for part in parts
    ]
    bd_rows.append(("total", *(_usd(r.monthly_usd) for r in scenarios.values())))
    bd_headers = [("Part", "text"), *((short[key], "num") for key in scenarios)]
    console.print(_table("Where the money goes (USD/month)", bd_headers, bd_rows))
    name, best = row.winner
    console.print(f"Cheapest: [bold]{name}[/bold] at {_usd(best.monthly_usd)}/month.")
    if row.busy_only is not None:
        console.print(
            "The busy-only line pays for GPU-seconds in use and nothing for idle hours; no "
            "always-on GPU is billed that way, so it is shown for reference, not as an option."
        )
    console.print()


def _render_seed(console: Console, seed: SeedComparison) -> None:
    from rich.panel import Panel

    from costing.seed import (
        SEED_GPU_USD_PER_HOUR,
        SEED_PRINTED_SELFHOSTED_USD,
    )

    api, formula, always = seed.api, seed.seed_formula, seed.always_on
    eng = formula.breakdown["engineering_setup"] + formula.breakdown["engineering_maintenance"]
    gpu = formula.breakdown["gpu_busy_only"]
    requests = int(api.inputs["requests_per_month"])
    gap = SEED_PRINTED_SELFHOSTED_USD - formula.monthly_usd
    lines = [
        f"API: {requests:,} requests × 1,000 tokens × $0.002/1K = [bold]{_usd(api.monthly_usd)}"
        "[/bold]/month.",
        f"Self-hosted by the seed's formula (busy GPU-seconds only, {formula.hours_per_month:g} h "
        f"month): {requests:,} / 50 req/s × ${SEED_GPU_USD_PER_HOUR:.2f} / 3600 = {_usd(gpu)} "
        f"+ engineering {_usd(eng)} = [bold]{_usd(formula.monthly_usd)}[/bold]/month; "
        f"savings {_usd(seed.seed_savings_usd)}.",
        f"The article prints {_usd(SEED_PRINTED_SELFHOSTED_USD)} for self-hosting: that does "
        f"not follow from its own code (the gap, {_usd(gap)}, equals one month of amortised "
        "setup, so it may be counted twice).",
        "Its script ignores idle GPU time. The same traffic on an always-on rented GPU: "
        f"{always.gpus} GPU × ${SEED_GPU_USD_PER_HOUR:.2f} × {always.hours_per_month:g} h = "
        f"{_usd(always.breakdown['gpu_rental'])} + engineering {_usd(eng)} = "
        f"[bold]{_usd(always.monthly_usd)}[/bold]/month (GPU busy {_pct(always.utilization)} "
        f"of the time); savings {_usd(seed.always_on_savings_usd)}.",
    ]
    console.print(Panel("\n".join(lines), title="The seed article, checked", expand=False))
    console.print()


def _render_sweep(console: Console, a: Assumptions, rows: Sequence[Row]) -> None:
    from rich import box

    title = (
        f"Monthly cost by volume ({a.hours_per_month:g} h month"
        + (", busy-only at the seed's 720 h" if a.is_seed else "")
        + ")"
    )
    dedicated = a.pool.dedicated
    headers = [("Requests/mo", "num"), ("API-only", "num")]
    if dedicated:
        headers.append(("Busy-only¹", "num"))
    headers += [("Self-hosted²", "num"), ("GPUs", "num"), ("Util.", "num")]
    if dedicated:
        headers += [("Hybrid³", "num"), ("k", "num")]
    headers.append(("Winner", "word"))
    cells: list[list[str]] = []
    for row in rows:
        line = [f"{row.requests:,}", _usd(row.api_only.monthly_usd)]
        if row.busy_only is not None:
            line.append(_usd(row.busy_only.monthly_usd))
        line += [
            _usd(row.selfhosted.monthly_usd),
            str(row.selfhosted.gpus),
            _pct(row.selfhosted.utilization),
        ]
        if row.hybrid_optimal is not None:
            line += [_usd(row.hybrid_optimal.monthly_usd), str(row.hybrid_optimal.gpus)]
        line.append(row.winner[0].split(" (")[0])
        cells.append(line)
    console.print(_table(title, headers, cells, box=box.SIMPLE_HEAVY, pad_edge=False))
    kind = {"rental": "rented", "purchase": "bought", "serverless": "serverless"}[a.pool.billing]
    if dedicated:
        console.print(
            "¹ the seed's formula: busy GPU-seconds only, idle hours free (not an option you "
            "can buy; never the winner)."
        )
    console.print(
        f"² self-hosted-only, {kind} GPUs sized for the peak"
        + (", paid busy or idle" if dedicated else ", paid per busy second")
        + "; every self-hosted figure includes engineering "
        + f"({_usd(a.engineering.monthly_cost())}/month)."
    )
    if dedicated:
        console.print(
            "³ the cheapest hybrid: k GPUs carry the base load, the excess over their capacity "
            "in each interval of the load curve goes to the API (k = 0 is API-only)."
        )
    console.print()


def _breakeven_headline(result: BreakevenResult) -> str:
    if result.requests_per_month is None:
        head = "No breakeven: self-hosted-only never costs less than API-only."
    else:
        head = (
            f"Breakeven, self-hosted-only vs API-only: [bold]{result.requests_per_month:,} "
            "requests/month[/bold] "
            f"(≈ {result.requests_per_month / (result.hours_per_month * 3600):,.2f} req/s on "
            f"average, {result.hours_per_month:g} h month)"
            + (
                f"; costs cross back {result.cross_backs}×, self-hosted stays cheaper from "
                f"{result.settled_requests_per_month:,}"
                if result.crosses_back
                else "; costs do not cross back"
            )
            + "."
        )
    return head


def _render_breakeven(console: Console, result: BreakevenResult) -> None:
    from rich.panel import Panel

    head = _breakeven_headline(result)
    body = "\n".join([head, "", *(f"• {line}" for line in result.reasoning)])
    console.print(Panel(body, title="Breakeven: self-hosted-only vs API-only", expand=False))
    console.print()
