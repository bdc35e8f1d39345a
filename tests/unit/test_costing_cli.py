"""`hybridgate tco`: flags, --config, --breakeven, --json, and its errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from costing.units import to_cents
from proxy.cli import tco
from proxy.cli.tco.flags import volume

CONFIG = """
engineering: {setup_hours: 80, hourly_rate_usd: 120, amortize_months: 12,
              maintenance_hours_per_month: 10}
gpu_pools:
  h100: {gpus: 2, billing: rental, usd_per_gpu_hour: ${TCO_TEST_GPU_PRICE:-2.20},
         capacity_tokens_per_s: 2500}
backends:
  openai: {type: openai, base_url: "https://api.openai.com/v1", api_key: ${TCO_TEST_UNSET_KEY}}
models:
  chat:
    targets: [{backend: openai, model: gpt-4o-mini}]
    compare_to: {backend: openai, model: gpt-4o-mini}
prices:
  gpt-4o-mini: {input: 0.15, output: 0.60, cached_input: 0.075}
costing: {hours_per_month: 720}
"""


def run_tco(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="hybridgate")
    tco.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tco", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "hybridgate.yaml"
    path.write_text(CONFIG)
    return path


def test_config_supplies_pool_engineering_prices_and_month(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_tco(
        [
            "--config",
            str(config_file),
            "--requests",
            "20M",
            "--prompt-tokens",
            "800",
            "--completion-tokens",
            "200",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["hours_per_month"] == 720
    assert data["assumptions"]["hours_per_month_source"] == "config costing.hours_per_month"
    assert data["assumptions"]["api"] == "gpt-4o-mini"  # from compare_to
    assert data["assumptions"]["seed_assumptions"] is False
    assert data["seed_check"] is None
    # API: 20M × (800 × $0.15 + 200 × $0.60) / 1M = 20M × $0.00024 = $4,800.00
    assert to_cents(data["scenarios"]["api_only"]["monthly_usd"]) == Decimal("4800.00")
    sh = data["scenarios"]["selfhosted_only"]
    # 20M / (720 × 3600 s) = 7.72 req/s; 2,500 tokens/s ÷ 1,000 = 2.5 req/s per GPU -> 4 GPUs
    assert sh["gpus"] == 4
    # 4 × $2.20 × 720 h = $6,336.00 + 80 × $120 / 12 + 10 × $120 = $2,000.00
    assert to_cents(sh["monthly_usd"]) == Decimal("8336.00")
    # the configured 2 GPUs, as a hybrid
    assert data["scenarios"]["hybrid_current"]["gpus"] == 2


def test_config_env_default_and_flags_override(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TCO_TEST_GPU_PRICE", "4.00")
    code, out, _ = run_tco(
        [
            "-c",
            str(config_file),
            "--hours-per-month",
            "730",
            "--gpu-throughput-rps",
            "100",
            "--json",
        ],
        capsys,
    )
    data = json.loads(out)
    assert code == 0
    assert data["hours_per_month"] == 730
    pool = data["assumptions"]["pool_cost"]
    assert pool["usd_per_gpu_hour"] == 4.0
    assert pool["capacity_requests_per_s"] == 100 and "capacity_tokens_per_s" not in pool
    assert to_cents(data["scenarios"]["selfhosted_only"]["breakdown"]["gpu_rental"]) == Decimal(
        "2920.00"
    )  # 1 GPU × $4.00 × 730 h


def test_breakeven_flag_prints_volume_and_reasoning(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_tco(["--breakeven"], capsys)
    assert code == 0
    assert "1,329,167 requests/month" in out
    assert "131,400,000" in out  # one GPU's monthly capacity, part of the reasoning
    assert "do not cross back" in out


def test_breakeven_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_tco(
        ["--breakeven", "--json", "--api-usd-per-1k", "0.00002", "--seed-defaults"], capsys
    )
    be = json.loads(out)["breakeven"]
    assert code == 0
    assert be["requests_per_month"] == 224_166_667
    assert be["crosses_back"] is True and be["cross_backs"] == 2
    assert be["settled_requests_per_month"] == 406_666_667


def test_load_curve_makes_a_hybrid_win(capsys: pytest.CaptureFixture[str]) -> None:
    curve = "1,1,1,1,1,1,2,4,8,10,10,10,10,10,10,10,8,6,4,3,2,2,1,1"
    code, out, _ = run_tco(
        [
            *("--api-model", "gpt-4o-mini", "--load-curve", curve),
            *("--gpu-throughput-rps", "5", "--requests", "30M", "--json"),
        ],
        capsys,
    )
    data = json.loads(out)
    assert code == 0
    best = data["scenarios"]["hybrid_optimal"]
    assert data["cheapest"].startswith("hybrid")
    assert 0 < best["gpus"] < data["scenarios"]["selfhosted_only"]["gpus"]
    assert 0 < best["api_share"] < 1


def test_serverless_and_purchase_billing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_tco(["--billing", "serverless", "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    # derived $2.50/3600 per GPU-second, no cold starts: the seed formula exactly
    assert to_cents(data["scenarios"]["selfhosted_only"]["monthly_usd"]) == Decimal("902.78")
    assert "hybrid_optimal" not in data["scenarios"]

    code, out, _ = run_tco(
        [
            *("--billing", "purchase", "--purchase-usd-per-gpu", "36000"),
            *("--gpu-amortize-months", "36", "--json"),
        ],
        capsys,
    )
    parts = json.loads(out)["scenarios"]["selfhosted_only"]["breakdown"]
    assert code == 0
    assert to_cents(parts["gpu_amortisation"]) == Decimal("1000.00")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--billing", "purchase"], "--purchase-usd-per-gpu and --gpu-amortize-months"),
        (["--api-model", "no-such-model-xyz"], "no price known for model 'no-such-model-xyz'"),
        (["--prompt-tokens", "10", "--tokens-per-request", "5"], "not both"),
        (["--cached-tokens", "5000"], "cached_tokens_per_request"),
        (["--config", "/nonexistent/hybridgate.yaml"], "cannot read config"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_tco(argv, capsys)
    assert code == 2
    assert out == ""
    assert message in err


def test_several_pools_need_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        "gpu_pools:\n"
        "  a: {billing: rental, usd_per_gpu_hour: 1, capacity_requests_per_s: 5}\n"
        "  b: {billing: rental, usd_per_gpu_hour: 2, capacity_requests_per_s: 9}\n"
    )
    code, _, err = run_tco(["--config", str(path)], capsys)
    assert code == 2 and "choose one with --pool" in err
    code, out, _ = run_tco(["--config", str(path), "--pool", "b", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["assumptions"]["pool_cost"]["usd_per_gpu_hour"] == 2


def test_volume_parsing() -> None:
    assert volume("5M") == 5_000_000
    assert volume("1.5B") == 1_500_000_000
    assert volume("100_000") == 100_000
    assert volume("2,500") == 2500
    with pytest.raises(argparse.ArgumentTypeError):
        volume("lots")


def test_hybridgate_tco_console_script_runs() -> None:
    """The real entry point: proxy.cli finds this module and dispatches `tco`."""
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "tco", "--json"],  # proxy/__main__.py calls main()
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "COLUMNS": "120"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert to_cents(json.loads(out.stdout)["seed_check"]["seed_formula"]["monthly_usd"]) == Decimal(
        "902.78"
    )


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A console wide enough that no table cell or line wraps (rich reads COLUMNS)."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.mark.usefixtures("wide")
def test_text_output_of_a_configured_run(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rich tables of a run from --config: assumptions with their sources, every
    scenario (the configured hybrid included), the breakdown and the cheapest."""
    code, out, err = run_tco(["-c", str(config_file)], capsys)
    assert code == 0 and err == ""
    for text in (
        "gpu_pools.h100: rented at $2.20/GPU-hour; capacity 2500 tokens/s per GPU",
        "80 h setup × $120 / 12 months + 10 h/month × $120 = $2,000.00/month",
        "720 hours (config costing.hours_per_month)",
        "API model 'gpt-4o-mini' from the config's compare_to",
        "Monthly cost at 5,000,000 requests/month",
        "Hybrid, configured (k=2, rest to API)",
        "Self-hosted-only (rented, always on)",
        "Where the money goes (USD/month)",
        "Hybrid (cfg)",
        "Cheapest: API-only at $1,875.00/month.",
    ):
        assert text in out, text


@pytest.mark.usefixtures("wide")
def test_text_output_of_bought_and_serverless_pools(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_tco(
        [
            *("--billing", "purchase", "--purchase-usd-per-gpu", "36000"),
            *("--gpu-amortize-months", "36", "--power-kw-per-gpu", "0.7"),
            *("--usd-per-kwh", "0.15", "--hosting-usd-per-month", "200"),
            *("--prompt-tokens", "800", "--completion-tokens", "200", "--cached-tokens", "300"),
            *("--fine-tune-tokens", "1000000", "--fine-tune-usd-per-1k", "0.008"),
        ],
        capsys,
    )
    assert code == 0
    assert "bought at $36,000/GPU over 36 months, 0.7 kW × $0.15/kWh, hosting $200.00/month" in out
    assert "800 prompt + 200 completion tokens/request (300 prompt tokens cached)" in out
    assert "Fine-tuning" in out and "$0.67/month amortised" in out
    assert "Self-hosted-only (bought, always on)" in out

    code, out, _ = run_tco(["--billing", "serverless", "--sweep"], capsys)
    assert code == 0
    assert "serverless GPUs sized for the peak, paid per busy second" in out
    assert "Busy-only¹" not in out and "Hybrid³" not in out
    assert "serverless price per GPU-second derived as --gpu-usd-per-hour / 3600" in out
