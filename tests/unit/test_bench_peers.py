"""bench/peers' pure parts: the report's arithmetic on a canned run, wrk's output, the stream check.

The harness measures; these check only what it computes from what it measured, so a wrong
"added" or an upside-down ratio cannot slip into the README's comparison.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

PEERS = Path(__file__).resolve().parents[2] / "bench" / "peers"


def _module(name: str) -> ModuleType:
    """bench/ is scripts, not a package: load one by path."""
    spec = importlib.util.spec_from_file_location(f"bench_peers_{name}", PEERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


report = _module("report")
load = _module("load")


def _rep(
    rps: float, p50: float, p99: float, ttft: float, achieved300: float, cpu: float | None
) -> dict[str, Any]:
    def open_run(rate: int, achieved: float) -> dict[str, Any]:
        return {
            "rate": rate,
            "sent": rate * 10,
            "ok": int(achieved * 10),
            "errors": {},
            "achieved_rps": achieved,
            "latency_ms": {"n": 1, "p50": p50, "p90": p99, "p99": p99, "max": p99},
            "cpu_s_per_1k": cpu,
        }

    return {
        "closed": {
            "rps": rps,
            "requests": int(rps * 10),
            "non_2xx": 0,
            "socket_errors": 0,
            "cpu_s_per_1k": cpu,
            "loadavg": 0.5,
        },
        "open": {"100": open_run(100, 99.5), "300": open_run(300, achieved300)},
        "stream": {
            "streams": 100,
            "errors": {},
            "streams_per_s": rps / 10,
            "ttft_ms": {"p50": ttft, "p99": ttft * 2},
            "total_ms": {"p50": ttft * 3, "p99": ttft * 4},
            "cpu_s_per_1k": cpu,
        },
    }


# One repetition a row: target, rps, p50, p99, TTFT p50, req/s answered of the 300 offered,
# CPU s per 1k. Three per target; the medians are the middle values.
REPS = [
    ("direct", 61000, 0.06, 0.2, 0.3, 299, None),
    ("direct", 60000, 0.05, 0.1, 0.3, 300, None),
    ("direct", 59000, 0.04, 0.1, 0.3, 300, None),
    ("portkey", 1800, 0.85, 6.0, 27.3, 299, 0.6),
    ("portkey", 1700, 0.80, 6.2, 27.5, 298, 0.5),
    ("portkey", 1900, 0.9, 6.1, 27.4, 299, 0.55),
    ("litellm", 180, 5.3, 8.6, 121.0, 150, 5.6),
    ("litellm", 170, 5.2, 8.7, 120.0, 160, 5.5),
    ("litellm", 175, 5.4, 8.8, 122.0, 155, 5.7),
    ("hybridgate", 3600, 0.25, 0.5, 0.8, 300, 0.25),
    ("hybridgate", 3400, 0.20, 0.6, 0.9, 300, 0.3),
    ("hybridgate", 3500, 0.30, 0.7, 0.7, 300, 0.2),
]
RSS = {"direct": (None, 0), "portkey": (210.0, 1), "litellm": (428.0, 1), "hybridgate": (60.0, 1)}
CANNED = {
    name: {
        "name": name,
        "reps": [_rep(*r[1:]) for r in REPS if r[0] == name],
        "peak_rss_mb": rss,
        "nprocs": nprocs,
    }
    for name, (rss, nprocs) in RSS.items()
}


def _write(tmp_path: Path) -> dict[str, dict[str, Any]]:
    for name, run in CANNED.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    return report.load(tmp_path)


def _row(rows: list[list[str]], label: str) -> list[str]:
    return next(r for r in rows if r[0] == label)


def test_medians_added_and_order(tmp_path: Path) -> None:
    summaries = _write(tmp_path)
    assert list(summaries) == ["direct", "litellm", "portkey", "hybridgate"]
    header, rows = report.table(summaries)
    assert header == ["metric", "direct", "litellm", "portkey", "hybridgate"]
    assert _row(rows, "req/s at saturation (closed loop)")[1:] == ["60000", "175", "1800", "3500"]
    # added = the target's median minus direct's median (0.05), not a median of differences
    assert _row(rows, "added p50 ms @ 100 req/s")[1:] == ["0.000", "5.250", "0.800", "0.200"]
    assert _row(rows, "added stream TTFT p50 ms")[1:] == ["0.000", "121", "27.1", "0.500"]
    # direct runs no proxy: its CPU and RSS cells are empty, not zero
    assert _row(rows, "proxy CPU s / 1k req (saturation)")[1] == "-"
    assert _row(rows, "proxy peak RSS MB (all processes)")[1:] == [
        "-",
        "428 (1)",
        "210 (1)",
        "60 (1)",
    ]
    assert _row(rows, "proxy CPU s / 1k streams")[1:] == ["-", "5.600", "0.550", "0.250"]


def test_empty_results_dir_says_so(tmp_path: Path) -> None:
    assert (
        report.report(report.load(tmp_path), "hybridgate", md=False) == "no <target>.json results"
    )


def test_overloaded_cells_are_starred(tmp_path: Path) -> None:
    summaries = _write(tmp_path)
    # litellm answered 155 of the 300 req/s offered: every 300 req/s cell of it is queueing
    assert summaries["litellm"]["overloaded"] == {"300"}
    assert summaries["portkey"]["overloaded"] == set()  # 299 of 300 is within 95%
    _, rows = report.table(summaries)
    assert _row(rows, "p50 ms @ 300 req/s")[2] == "5.300*"
    assert _row(rows, "p50 ms @ 100 req/s")[2] == "5.300"
    assert "overloaded at 300 req/s" in report.report(summaries, "hybridgate", md=False)


def test_ratios_say_how_much_better_the_subject_is(tmp_path: Path) -> None:
    ratios = {(r[0], r[1]): r[2] for r in report.ratios(_write(tmp_path), "hybridgate")}
    assert ratios[("req/s at saturation (closed loop)", "portkey")] == "1.9x"  # 3500 / 1800
    assert ratios[("added p50 ms @ 100 req/s", "portkey")] == "4.0x"  # 0.80 / 0.20
    assert ratios[("added p50 ms @ 100 req/s", "litellm")] == "26.2x"  # 5.25 / 0.20
    assert ratios[("proxy CPU s / 1k req (saturation)", "litellm")] == "22.4x"  # 5.6 / 0.25
    assert ratios[("proxy peak RSS MB (all processes)", "portkey")] == "3.5x"  # 210 / 60
    assert not any(peer == "direct" for _, peer in ratios)


def test_ratio_is_blank_when_a_difference_is_not_positive(tmp_path: Path) -> None:
    summaries = _write(tmp_path)
    summaries["hybridgate"]["p50@100"] = 0.04  # below direct's 0.05: noise, no ratio to speak of
    ratios = {(r[0], r[1]): r[2] for r in report.ratios(summaries, "hybridgate")}
    assert ratios[("added p50 ms @ 100 req/s", "portkey")] == "-"


def test_markdown_table_shape(tmp_path: Path) -> None:
    header, rows = report.table(_write(tmp_path))
    md = report.render(header, rows, md=True).splitlines()
    assert md[0] == "| metric | direct | litellm | portkey | hybridgate |"
    assert md[1] == "|---|---:|---:|---:|---:|"
    assert all(line.count("|") == 6 for line in md)


WRK_OUT = """Running 10s test @ http://127.0.0.1:18100/v1/chat/completions
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    17.73ms    2.10ms  40.12ms   90.00%
    Req/Sec     1.80k   120.00     2.00k    70.00%
  18000 requests in 10.00s, 9.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   1800.00
Transfer/sec:      0.90MB
"""


def test_parse_wrk_counts_failures() -> None:
    r = load.parse_wrk(WRK_OUT, 32)
    assert (r["requests"], r["seconds"], r["rps"]) == (18000, 10.0, 1800.0)
    assert (r["non_2xx"], r["socket_errors"]) == (7, 5)
    short = load.parse_wrk("  900 requests in 500.00ms, 1MB read\n", 8)
    assert short["rps"] == 1800.0 and short["non_2xx"] == 0


def test_stream_complete_needs_usage_then_done() -> None:
    usage = b'data: {"choices":[],"usage":{"total_tokens":3}}\n\n'
    assert load.stream_complete(b'data: {"x":1}\n\n' + usage + b"data: [DONE]\n\n")
    assert not load.stream_complete(b'data: {"x":1}\n\ndata: [DONE]\n\n')  # no usage chunk
    assert not load.stream_complete(b'data: {"x":1}\n\n' + usage)  # cut before [DONE]


def test_percentile_interpolates() -> None:
    assert load.pct([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert load.pct([1.0], 99) == 1.0
    assert load.pct([], 50) is None
