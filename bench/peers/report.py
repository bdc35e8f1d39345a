"""The comparison table of a peer run: medians over the repetitions, side by side.

Reads the `<target>.json` files `load.py suite` wrote. "added" = the target's figure minus
`direct`'s (the upstream called with no proxy) at the same percentile and rate, in the
same run; `*` marks an overloaded open-loop cell (fewer than 95% of the offered requests/s
answered: that latency is queueing and grows with the run's length). Then one ratio per
peer and metric, oriented so that > 1 means the subject (hybridgate) does better.

    python bench/peers/report.py RESULTS_DIR [--subject hybridgate] [--md]

Pure arithmetic on the JSON: nothing here measures.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASELINE = "direct"
ORDER = ["direct", "litellm", "litellm-w2", "portkey", "hybridgate"]
OVERLOAD = 0.95


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool
    added: bool = False  # also print target − direct
    proxy_only: bool = False  # meaningless for direct (no proxy process)


def metrics(rates: Iterable[str]) -> list[Metric]:
    out = [
        Metric("rps", "req/s at saturation (closed loop)", True),
        Metric("cpu_closed", "proxy CPU s / 1k req (saturation)", False, proxy_only=True),
    ]
    for r in rates:
        out += [
            Metric(f"p50@{r}", f"p50 ms @ {r} req/s", False, added=True),
            Metric(f"p99@{r}", f"p99 ms @ {r} req/s", False, added=True),
            Metric(f"cpu@{r}", f"proxy CPU s / 1k req @ {r} req/s", False, proxy_only=True),
        ]
    out += [
        Metric("ttft_p50", "stream TTFT p50 ms", False, added=True),
        Metric("ttft_p99", "stream TTFT p99 ms", False, added=True),
        Metric("total_p50", "stream total p50 ms", False, added=True),
        Metric("streams_per_s", "streams/s", True),
        Metric("cpu_stream", "proxy CPU s / 1k streams", False, proxy_only=True),
        Metric("rss_mb", "proxy peak RSS MB (all processes)", False, proxy_only=True),
    ]
    return out


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """One target's medians over its repetitions, keyed as in `metrics()`."""
    reps = result["reps"]
    s: dict[str, Any] = {
        "rps": _median([r["closed"]["rps"] for r in reps]),
        "cpu_closed": _median([r["closed"].get("cpu_s_per_1k") for r in reps]),
        "ttft_p50": _median([r["stream"]["ttft_ms"]["p50"] for r in reps]),
        "ttft_p99": _median([r["stream"]["ttft_ms"]["p99"] for r in reps]),
        "total_p50": _median([r["stream"]["total_ms"]["p50"] for r in reps]),
        "streams_per_s": _median([r["stream"]["streams_per_s"] for r in reps]),
        "cpu_stream": _median([r["stream"].get("cpu_s_per_1k") for r in reps]),
        "rss_mb": result.get("peak_rss_mb"),
        "nprocs": result.get("nprocs"),
        "overloaded": set(),
        "errors": sum(
            sum(r["stream"]["errors"].values())
            + sum(sum(o["errors"].values()) for o in r["open"].values())
            + r["closed"]["non_2xx"]
            + r["closed"]["socket_errors"]
            for r in reps
        ),
        "loadavg": _median([r["closed"].get("loadavg") for r in reps]),
    }
    for rate in reps[0]["open"]:
        runs = [r["open"][rate] for r in reps]
        s[f"p50@{rate}"] = _median([o["latency_ms"]["p50"] for o in runs])
        s[f"p99@{rate}"] = _median([o["latency_ms"]["p99"] for o in runs])
        s[f"cpu@{rate}"] = _median([o.get("cpu_s_per_1k") for o in runs])
        if _median([o["achieved_rps"] for o in runs]) < OVERLOAD * float(rate):  # type: ignore[operator]
            s["overloaded"].add(rate)
    return s


def _rate_of(key: str) -> str | None:
    return key.split("@", 1)[1] if "@" in key else None


def _fmt(v: float | None, star: bool = False) -> str:
    if v is None:
        return "-"
    text = f"{v:.0f}" if abs(v) >= 100 else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return text + ("*" if star else "")


def table(summaries: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each metric, then its "added" row where it has one."""
    names = list(summaries)
    rates = [k.split("@", 1)[1] for k in next(iter(summaries.values())) if k.startswith("p50@")]
    base = summaries.get(BASELINE)
    rows: list[list[str]] = []
    for m in metrics(rates):
        rate = _rate_of(m.key)
        row = [m.label]
        for n in names:
            v = None if (m.proxy_only and n == BASELINE) else summaries[n].get(m.key)
            if m.key == "rss_mb" and v is not None:
                row.append(f"{v:.0f} ({summaries[n]['nprocs']})")
                continue
            row.append(_fmt(v, rate in summaries[n]["overloaded"]))
        rows.append(row)
        if m.added and base is not None:
            added = ["added " + m.label]
            for n in names:
                v, b = summaries[n].get(m.key), base.get(m.key)
                star = rate in summaries[n]["overloaded"]
                added.append(_fmt(None if v is None or b is None else v - b, star))
            rows.append(added)
    return ["metric", *names], rows


def ratios(summaries: dict[str, dict[str, Any]], subject: str) -> list[list[str]]:
    """Per peer and metric: > 1 means `subject` does better (more req/s, less added ms/CPU/RAM)."""
    if subject not in summaries:
        return []
    base = summaries.get(BASELINE, {})
    me = summaries[subject]
    rows = []
    rates = [k.split("@", 1)[1] for k in me if k.startswith("p50@")]
    for m in metrics(rates):
        for peer, s in summaries.items():
            if peer in (BASELINE, subject):
                continue
            a, b = me.get(m.key), s.get(m.key)
            if m.added:  # compare what each adds over direct, not the totals
                if base.get(m.key) is None:
                    continue
                a = None if a is None else a - base[m.key]
                b = None if b is None else b - base[m.key]
            label = ("added " if m.added else "") + m.label
            if a is None or b is None or a <= 0 or b <= 0:
                rows.append([label, peer, "-"])
                continue
            rows.append([label, peer, f"{(a / b if m.higher_is_better else b / a):.1f}x"])
    return rows


def render(header: list[str], rows: list[list[str]], md: bool) -> str:
    if md:
        lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(  # noqa: E731
        c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
    )
    return "\n".join([fmt(header), *(fmt(r) for r in rows)])


def load(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Each target's summary, in ORDER, then any other target by name."""
    found = {
        p.stem: json.loads(p.read_text()) for p in results_dir.glob("*.json") if p.stem != "summary"
    }
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    return {n: summarize(found[n]) for n in names}


def report(summaries: dict[str, dict[str, Any]], subject: str, md: bool) -> str:
    if not summaries:
        return "no <target>.json results"
    header, rows = table(summaries)
    parts = [render(header, rows, md)]
    ratio_rows = ratios(summaries, subject)
    if ratio_rows:
        parts.append(f"\n{subject} vs each peer (> 1 = {subject} better):")
        parts.append(render(["metric", "peer", "ratio"], ratio_rows, md))
    notes = [
        f"  {n}: {s['errors']} failed requests, load average {_fmt(s['loadavg'])}"
        + (f", overloaded at {', '.join(sorted(s['overloaded']))} req/s" if s["overloaded"] else "")
        for n, s in summaries.items()
    ]
    parts.append(
        "\nMedians over the repetitions. added = target − direct, same percentile and rate. "
        "* = overloaded (< 95% of the offered req/s answered). CPU = the proxy's process tree.\n"
        + "\n".join(notes)
    )
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--subject", default="hybridgate")
    ap.add_argument("--md", action="store_true", help="Markdown tables")
    a = ap.parse_args()
    print(report(load(a.results), a.subject, a.md))


if __name__ == "__main__":
    main()
