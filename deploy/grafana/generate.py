"""Writes the three Grafana dashboards in deploy/grafana/dashboards/ from one description.

Dashboards are code here rather than hand-edited JSON so every panel gets a unit, the
templated datasource and the same layout rules, and so the tests can read back exactly
the queries Grafana will run. Edit this file, then:

    python deploy/grafana/generate.py          # rewrite the JSON
    python deploy/grafana/generate.py --check  # exit 1 if the JSON is stale (the tests do)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}

# Units (Grafana unit ids): money, ratios shown as percent, time, rates.
USD = "currencyUSD"
PERCENT = "percentunit"
SECONDS = "s"
HOURS = "h"
REQ_PER_S = "reqps"
OPS = "ops"
COUNT = "short"
TOKENS_PER_S = "suffix: tok/s"
GPUS = "suffix: GPUs"


@dataclass
class Q:
    """One panel query: PromQL, its legend, and whether Grafana runs it as an instant query."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass
class Panel:
    title: str
    queries: list[Q]
    unit: str
    kind: str = "timeseries"  # timeseries | stat | bargauge | table | state-timeline
    width: int = 12
    height: int = 8
    description: str = ""
    stack: bool = False
    mappings: list[dict[str, Any]] = field(default_factory=list)
    thresholds: list[tuple[float | None, str]] = field(default_factory=list)
    min: float | None = None
    max: float | None = None


@dataclass
class Dashboard:
    uid: str
    title: str
    filename: str
    description: str
    variables: list[tuple[str, str, str]]  # (name, label, label_values(...) query)
    panels: list[Panel]


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"var-{name}"},
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    }


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": "Prometheus", "value": "prometheus"},
        "hide": 0,
        "refresh": 1,
    }


def panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": p.unit, "mappings": p.mappings}
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    steps = p.thresholds or [(None, "green")]
    defaults["thresholds"] = {
        "mode": "absolute",
        "steps": [{"value": v, "color": c} for v, c in steps],
    }
    options: dict[str, Any] = {}
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 30 if p.stack else 10,
            "showPoints": "never",
            "stacking": {"mode": "normal" if p.stack else "none", "group": "A"},
        }
        options = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif p.kind in ("stat", "bargauge"):
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area" if p.kind == "stat" else "none",
            "orientation": "horizontal",
            "displayMode": "gradient",
        }
    elif p.kind == "state-timeline":
        options = {"showValue": "never", "mergeValues": True, "rowHeight": 0.8}
    elif p.kind == "table":
        options = {"showHeader": True, "sortBy": [{"displayName": "Value", "desc": True}]}
    targets = []
    for i, q in enumerate(p.queries):
        t: dict[str, Any] = {
            "refId": chr(ord("A") + i),
            "datasource": DS,
            "expr": q.expr,
            "legendFormat": q.legend or "__auto",
            "range": not q.instant,
            "instant": q.instant,
        }
        if q.table:
            t["format"] = "table"
        targets.append(t)
    out: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": targets,
    }
    if p.kind == "table":
        out["transformations"] = [
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ]
    return out


def dashboard_json(d: Dashboard) -> dict[str, Any]:
    panels, x, y, row_h = [], 0, 0, 0
    for i, p in enumerate(d.panels, start=1):
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        panels.append(panel_json(p, i, x, y))
        x += p.width
        row_h = max(row_h, p.height)
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": ["hybridgate"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "links": [
            {
                "type": "dashboards",
                "tags": ["hybridgate"],
                "asDropdown": False,
                "title": "hybridgate",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {
            "list": [datasource_variable()]
            + [query_variable(n, label, q) for n, label, q in d.variables]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


# ------------------------------------------------------------------ the dashboards
def stat(title: str, query: Q, unit: str = USD, **kw: Any) -> Panel:
    """A headline number: one query, a quarter of a row."""
    return Panel(title, [query], unit, "stat", width=6, height=5, **kw)


BT = 'backend=~"$backend", tenant=~"$tenant"'
COST_RATE = "backend_tenant:hybridgate_cost_usd_per_hour:rate5m"
UP_DOWN = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": "red", "index": 0},
            "1": {"text": "up", "color": "green", "index": 1},
        },
    }
]
OPEN_CLOSED = [
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green", "index": 0},
            "1": {"text": "open", "color": "red", "index": 1},
        },
    }
]

COST = Dashboard(
    uid="hybridgate-cost",
    title="hybridgate: Cost & breakeven",
    filename="cost-breakeven.json",
    description="What we spend, what the other path would have cost, TCO and breakeven.",
    variables=[
        ("backend", "Backend", "label_values(hybridgate_backend_info, backend)"),
        ("tenant", "Tenant", "label_values(hybridgate_cost_usd_total, tenant)"),
        ("pool", "GPU pool", "label_values(hybridgate_gpu_provisioned_seconds_total, pool)"),
    ],
    panels=[
        stat(
            "Spend now (USD per hour)",
            Q("hybridgate:spend_usd_per_hour:rate5m", "spend"),
            description="API tokens + busy GPU-seconds + idle GPUs and engineering, last 5 min.",
        ),
        stat(
            "API only would cost (USD per hour)",
            Q("hybridgate:api_only_spend_usd_per_hour:rate5m", "API only"),
            description="The same traffic, every request priced at its alias's API model.",
        ),
        stat(
            "Savings against API only (USD per hour)",
            Q("hybridgate:savings_vs_api_usd_per_hour:rate5m", "savings"),
            description="Negative: the GPUs cost more than the API would for today's traffic.",
            thresholds=[(None, "red"), (0, "green")],
        ),
        stat(
            "Spent in the time range (USD)",
            Q(
                "(sum(increase(hybridgate_cost_usd_total[$__range])) or vector(0))"
                " + (sum(increase("
                "hybridgate_selfhosted_fixed_cost_usd_total[$__range])) or vector(0))",
                "spent",
                instant=True,
            ),
        ),
        Panel(
            "Spend by backend (USD per hour)",
            [
                Q(
                    f"sum by (backend) ({COST_RATE}{{{BT}}})",
                    "{{backend}}",
                ),
                Q(
                    "label_replace(pool:hybridgate_selfhosted_fixed_cost_usd_per_hour:rate5m"
                    '{pool=~"$pool"}, "backend", "idle GPUs + engineering ($1)", "pool", "(.+)")',
                    "{{backend}}",
                ),
            ],
            USD,
            stack=True,
            description="Per-request cost by serving backend, plus what the GPUs cost while idle.",
        ),
        Panel(
            "Spend by tenant (USD per hour)",
            [
                Q(
                    f"sum by (tenant) ({COST_RATE}{{{BT}}})",
                    "{{tenant}}",
                )
            ],
            USD,
            stack=True,
            description="Per-request cost by tenant (idle GPU cost belongs to no tenant).",
        ),
        Panel(
            "Actual vs API only (USD per hour)",
            [
                Q("hybridgate:spend_usd_per_hour:rate5m", "actual, all in"),
                Q("hybridgate:api_only_spend_usd_per_hour:rate5m", "everything on the API"),
            ],
            USD,
        ),
        Panel(
            "Each request's other path (USD per hour)",
            [
                Q("kind:hybridgate_cost_usd_per_hour:rate5m", "actual: {{kind}}"),
                Q(
                    "kind:hybridgate_counterfactual_cost_usd_per_hour:rate5m",
                    "other path: {{kind}}",
                ),
            ],
            USD,
            description="Self-hosted traffic at its API price; API traffic at the GPUs' "
            "marginal cost (only where the alias has a self-hosted target).",
        ),
        Panel(
            "Monthly TCO per scenario",
            [Q("max by (scenario) (hybridgate_tco_monthly_usd)", "{{scenario}}", instant=True)],
            USD,
            "bargauge",
            description="The live window's traffic projected to a month and costed as API only, "
            "self-hosted only, the hybrid as routed now, and the cheapest hybrid.",
        ),
        Panel(
            "Breakeven vs projected volume (requests per month)",
            [
                Q("max(hybridgate_breakeven_requests_per_month)", "breakeven"),
                Q("max(hybridgate_projected_requests_per_month)", "projected from live traffic"),
            ],
            COUNT,
            description="Above the breakeven line, self-hosting costs less than the API.",
        ),
        Panel(
            "Idle cost (USD per hour)",
            [
                Q(
                    'pool:hybridgate_selfhosted_fixed_cost_usd_per_hour:rate5m{pool=~"$pool"}',
                    "{{pool}}",
                )
            ],
            USD,
            description="Idle GPU-seconds at the pool's price, plus its share of engineering.",
        ),
        Panel(
            "Monthly API budget used",
            [Q('tenant:hybridgate_tenant_budget_used:ratio{tenant=~"$tenant"}', "{{tenant}}")],
            PERCENT,
            "bargauge",
            min=0,
            max=1,
            thresholds=[(None, "green"), (0.8, "orange"), (1, "red")],
        ),
        Panel(
            "Spend by backend and tenant in the time range (USD)",
            [
                Q(
                    f"sum by (backend, tenant) (increase(hybridgate_cost_usd_total{{{BT}}}"
                    "[$__range]))",
                    instant=True,
                    table=True,
                )
            ],
            USD,
            "table",
            width=24,
        ),
    ],
)

AB = 'alias=~"$alias", backend=~"$backend"'


def quantiles(metric: str, by: str) -> list[Q]:
    return [
        Q(
            f"histogram_quantile({q}, sum by (le, {by}) "
            f"(rate({metric}_bucket{{{AB}}}[$__rate_interval])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


ROUTING = Dashboard(
    uid="hybridgate-routing",
    title="hybridgate: Routing & reliability",
    filename="routing-reliability.json",
    description="Where requests go, what fails over, breakers, and latency.",
    variables=[
        ("alias", "Model alias", "label_values(hybridgate_requests_total, alias)"),
        ("backend", "Backend", "label_values(hybridgate_backend_info, backend)"),
    ],
    panels=[
        Panel(
            "Requests by alias, backend and outcome",
            [
                Q(
                    f"sum by (alias, backend, outcome) "
                    f"(rate(hybridgate_requests_total{{{AB}}}[$__rate_interval]))",
                    "{{alias}} → {{backend}}: {{outcome}}",
                )
            ],
            REQ_PER_S,
            width=24,
            stack=True,
        ),
        Panel(
            "Error ratio",
            [Q('alias:hybridgate_requests_errors:ratio_rate5m{alias=~"$alias"}', "{{alias}}")],
            PERCENT,
            description="Errors and cut streams; rejected requests and client disconnects "
            "are not the proxy's failures.",
            min=0,
        ),
        Panel(
            "Failovers per request",
            [
                Q(
                    'alias:hybridgate_failovers_per_request:ratio_rate5m{alias=~"$alias"}',
                    "{{alias}}",
                )
            ],
            PERCENT,
            min=0,
        ),
        Panel(
            "Failovers by reason",
            [
                Q(
                    'alias_reason:hybridgate_failovers:rate5m{alias=~"$alias"}',
                    "{{alias}}: {{from_backend}} → {{to_backend}} ({{reason}})",
                )
            ],
            OPS,
            width=24,
        ),
        Panel(
            "Backend health",
            [Q('max by (backend) (hybridgate_backend_up{backend=~"$backend"})', "{{backend}}")],
            COUNT,
            "state-timeline",
            mappings=UP_DOWN,
            thresholds=[(None, "red"), (1, "green")],
        ),
        Panel(
            "Circuit breakers",
            [
                Q(
                    'max by (backend) (hybridgate_breaker_open{backend=~"$backend"})',
                    "{{backend}}",
                )
            ],
            COUNT,
            "state-timeline",
            mappings=OPEN_CLOSED,
            thresholds=[(None, "green"), (1, "red")],
        ),
        Panel(
            "Time to first token",
            quantiles("hybridgate_ttft_seconds", "alias"),
            SECONDS,
        ),
        Panel(
            "Request duration",
            quantiles("hybridgate_request_duration_seconds", "backend"),
            SECONDS,
        ),
        Panel(
            "Proxy overhead",
            [
                Q(
                    f"histogram_quantile({q}, sum by (le) "
                    "(rate(hybridgate_overhead_seconds_bucket[$__rate_interval])))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.99)
            ],
            SECONDS,
            description="Time the proxy itself adds to each request.",
        ),
        Panel(
            "In-flight requests",
            [
                Q(
                    'sum by (backend) (hybridgate_inflight_requests{backend=~"$backend"})',
                    "{{backend}}",
                )
            ],
            COUNT,
            stack=True,
        ),
        Panel(
            "Tokens by backend and kind",
            [
                Q(
                    'backend_kind:hybridgate_tokens:rate5m{backend=~"$backend"}',
                    "{{backend}} {{kind}}",
                )
            ],
            TOKENS_PER_S,
            width=24,
            stack=True,
        ),
    ],
)

P = 'pool=~"$pool"'

GPU = Dashboard(
    uid="hybridgate-gpu",
    title="hybridgate: GPU pools",
    filename="gpu-pools.json",
    description="Provisioned, busy and idle GPUs, utilization, and vLLM's engine state.",
    variables=[
        ("pool", "GPU pool", "label_values(hybridgate_gpu_provisioned_seconds_total, pool)"),
    ],
    panels=[
        Panel(
            "GPUs provisioned, busy and idle",
            [
                Q(f"pool:hybridgate_gpus_provisioned:rate5m{{{P}}}", "provisioned {{pool}}"),
                Q(f"pool:hybridgate_gpus_busy:rate5m{{{P}}}", "busy {{pool}}"),
                Q(f"pool:hybridgate_gpus_idle:rate5m{{{P}}}", "idle {{pool}}"),
            ],
            GPUS,
            description="GPU-seconds per second: busy = at least one request in flight.",
        ),
        Panel(
            "Utilization: last 5 min, 1 h, 24 h",
            [
                Q(f"pool:hybridgate_gpu_utilization:ratio_rate5m{{{P}}}", "5m {{pool}}", True),
                Q(f"pool:hybridgate_gpu_utilization:ratio_rate1h{{{P}}}", "1h {{pool}}", True),
                Q(f"pool:hybridgate_gpu_utilization:ratio_rate24h{{{P}}}", "24h {{pool}}", True),
            ],
            PERCENT,
            "bargauge",
            min=0,
            max=1,
            thresholds=[(None, "red"), (0.2, "orange"), (0.5, "green")],
        ),
        Panel(
            "Utilization over time",
            [
                Q(f"pool:hybridgate_gpu_utilization:ratio_rate5m{{{P}}}", "{{pool}} (5m)"),
                # A ratio of the pool's one set of books, the same on every replica:
                # aggregated by picking one value (max), never summed.
                Q(
                    f"max by (pool) (hybridgate_gpu_utilization_ratio{{{P}}})",
                    "{{pool}} (proxy's window)",
                ),
            ],
            PERCENT,
            min=0,
            max=1,
        ),
        Panel(
            "Idle GPU-hours in the time range",
            [
                Q(
                    f"(sum by (pool) (increase(hybridgate_gpu_provisioned_seconds_total{{{P}}}"
                    "[$__range])) - sum by (pool) (increase("
                    f"hybridgate_gpu_busy_seconds_total{{{P}}}[$__range]))) / 3600",
                    "{{pool}}",
                    instant=True,
                )
            ],
            HOURS,
            "stat",
            width=6,
        ),
        Panel(
            "Idle cost (USD per hour)",
            [Q(f"pool:hybridgate_selfhosted_fixed_cost_usd_per_hour:rate5m{{{P}}}", "{{pool}}")],
            USD,
            "stat",
            width=6,
        ),
        Panel(
            "vLLM requests running and waiting",
            [
                Q(f"sum by (instance) (vllm:num_requests_running{{{P}}})", "running {{instance}}"),
                Q(f"sum by (instance) (vllm:num_requests_waiting{{{P}}})", "waiting {{instance}}"),
            ],
            COUNT,
            description="From vLLM's /metrics: a queue that grows means the pool is saturated.",
        ),
        Panel(
            "vLLM KV-cache usage",
            [
                Q(
                    f"max by (instance) (vllm:kv_cache_usage_perc{{{P}}} "
                    f"or vllm:gpu_cache_usage_perc{{{P}}})",
                    "{{instance}}",
                )
            ],
            PERCENT,
            min=0,
            max=1,
            description="vllm:kv_cache_usage_perc (vllm:gpu_cache_usage_perc before v0.10).",
        ),
        Panel(
            "vLLM token throughput",
            [
                Q(
                    f"sum by (instance) (rate(vllm:prompt_tokens_total{{{P}}}[$__rate_interval]))",
                    "prompt {{instance}}",
                ),
                Q(
                    "sum by (instance) "
                    f"(rate(vllm:generation_tokens_total{{{P}}}[$__rate_interval]))",
                    "generated {{instance}}",
                ),
            ],
            TOKENS_PER_S,
            stack=True,
        ),
    ],
)

DASHBOARDS = (COST, ROUTING, GPU)


def render() -> dict[str, str]:
    """File name → JSON text for every dashboard."""
    return {
        d.filename: json.dumps(dashboard_json(d), indent=2, ensure_ascii=False) + "\n"
        for d in DASHBOARDS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print(f"stale dashboards: {', '.join(stale)}; run {sys.argv[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
