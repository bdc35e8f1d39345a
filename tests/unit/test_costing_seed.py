"""The seed article's numbers, to the cent, from the library and from `hybridgate tco`."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal

import pytest

from costing.seed import (
    SEED_PRINTED_SELFHOSTED_USD,
    SEED_VOLUMES,
    seed_comparison,
    seed_engineering,
)
from costing.units import format_usd, to_cents
from proxy.cli import tco


def run_tco(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`hybridgate tco ARGV` through the subcommand's own parser (no other subcommands)."""
    parser = argparse.ArgumentParser(prog="hybridgate")
    tco.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tco", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- the library


def test_seed_api_cost_is_10000() -> None:
    # 5,000,000 requests × 1,000 tokens / 1,000 × $0.002
    assert to_cents(seed_comparison().api.monthly_usd) == Decimal("10000.00")


def test_seed_formula_selfhosted_is_902_78() -> None:
    formula = seed_comparison().seed_formula
    # 5,000,000 / 50 req/s = 100,000 GPU-seconds × $2.50 / 3600 = $69.44
    assert to_cents(formula.breakdown["gpu_busy_only"]) == Decimal("69.44")
    # + 40 h × $100 / 12 + 5 h × $100 = $833.33
    assert to_cents(seed_engineering().monthly_cost()) == Decimal("833.33")
    assert to_cents(formula.monthly_usd) == Decimal("902.78")
    assert formula.hours_per_month == 720  # the seed's month, stated


def test_seed_savings_is_9097_22() -> None:
    assert to_cents(seed_comparison().seed_savings_usd) == Decimal("9097.22")


def test_always_on_gpu_is_2658_33() -> None:
    always = seed_comparison().always_on
    # 1 GPU × $2.50 × 730 h = $1,825.00, + $833.33 engineering
    assert always.gpus == 1 and always.hours_per_month == 730
    assert to_cents(always.breakdown["gpu_rental"]) == Decimal("1825.00")
    assert to_cents(always.monthly_usd) == Decimal("2658.33")
    assert to_cents(seed_comparison().always_on_savings_usd) == Decimal("7341.67")


def test_printed_figure_does_not_follow_from_the_formula() -> None:
    formula = seed_comparison().seed_formula.monthly_usd
    assert to_cents(formula) != Decimal(str(SEED_PRINTED_SELFHOSTED_USD))
    # The gap is exactly one month of amortised setup (40 h × $100 / 12).
    assert to_cents(SEED_PRINTED_SELFHOSTED_USD - formula) == Decimal("333.33")


def test_format_usd_rounds_half_up_to_the_cent() -> None:
    assert format_usd(902.7777777777777) == "$902.78"
    assert format_usd(0.125) == "$0.13"
    assert format_usd(-7341.666) == "-$7,341.67"
    assert format_usd(1e8) == "$100,000,000.00"


# ---------------------------------------------------------------- the CLI


def test_cli_seed_defaults_print_the_seed_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_tco(["--requests", "5000000", "--seed-defaults"], capsys)
    assert code == 0 and err == ""
    for figure in ("$10,000.00", "$902.78", "$9,097.22", "$1,825.00", "$2,658.33", "$1,236.11"):
        assert figure in out, figure
    assert "does not follow from its own code" in out
    assert "ignores idle GPU time" in out
    assert "720 h" in out and "730 h" in out


def test_cli_without_flags_is_the_seed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_tco(["--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert data["assumptions"]["seed_assumptions"] is True
    seed = data["seed_check"]
    assert to_cents(seed["api"]["monthly_usd"]) == Decimal("10000.00")
    assert to_cents(seed["seed_formula"]["monthly_usd"]) == Decimal("902.78")
    assert to_cents(seed["seed_savings_usd"]) == Decimal("9097.22")
    assert to_cents(seed["always_on"]["monthly_usd"]) == Decimal("2658.33")
    scenarios = data["scenarios"]
    assert to_cents(scenarios["api_only"]["monthly_usd"]) == Decimal("10000.00")
    assert to_cents(scenarios["selfhosted_busy_only"]["monthly_usd"]) == Decimal("902.78")
    assert to_cents(scenarios["selfhosted_only"]["monthly_usd"]) == Decimal("2658.33")
    assert data["hours_per_month"] == 730


def test_cli_sweep_covers_the_seed_volumes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_tco(["--sweep", "--json"], capsys)
    rows = json.loads(out)["sweep"]
    assert code == 0
    assert [r["requests_per_month"] for r in rows] == list(SEED_VOLUMES)
    # API is $0.002 per request; self-hosted is one always-on GPU at every seed volume.
    for r in rows:
        assert r["api_only"]["monthly_usd"] == pytest.approx(0.002 * r["requests_per_month"])
        assert to_cents(r["selfhosted_only"]["monthly_usd"]) == Decimal("2658.33")
    assert [r["winner"] for r in rows] == [
        "API-only",
        "API-only",
        "API-only",
        "self-hosted",
        "self-hosted",
    ]


def test_cli_sweep_table_names_the_breakeven(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_tco(["--sweep"], capsys)
    assert code == 0
    assert "100,000,000" in out and "$200,000.00" in out and "76.1%" in out
    assert "1,329,167 requests/month" in out
