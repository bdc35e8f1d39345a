"""Price table (litellm's bundled JSON + config overrides) and per-request API cost."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from costing import ApiCost, ModelPrice, PriceTable, UnknownModelPrice, api_cost
from costing.prices import litellm_price_file

# ---------------------------------------------------------------- litellm's table


def test_litellm_table_is_found_and_read_as_usd_per_token() -> None:
    path = litellm_price_file()
    assert path is not None and path.name == "model_prices_and_context_window_backup.json"
    raw = json.loads(path.read_text())
    table = PriceTable.load()
    price = table.get("gpt-4o-mini")
    assert price.input == raw["gpt-4o-mini"]["input_cost_per_token"]
    assert price.output == raw["gpt-4o-mini"]["output_cost_per_token"]
    assert price.cached_input == raw["gpt-4o-mini"].get("cache_read_input_token_cost")
    assert price.batch_input == raw["gpt-4o-mini"].get("input_cost_per_token_batches")
    assert len(table) > 1000


def test_provider_prefixed_names_fall_back_to_the_bare_key() -> None:
    table = PriceTable.load()
    assert table.get("openai/gpt-4o-mini") == table.get("gpt-4o-mini")
    assert table.get("anthropic/claude-sonnet-4-5") == table.get("claude-sonnet-4-5")
    assert table.find("openai/no-such-model-xyz") is None


def test_context_window_comes_from_max_input_tokens() -> None:
    raw = json.loads(litellm_price_file().read_text())  # type: ignore[union-attr]
    table = PriceTable.load()
    expected = raw["gpt-4o-mini"]["max_input_tokens"]
    assert table.context_window("gpt-4o-mini") == expected
    assert table.context_window("openai/gpt-4o-mini") == expected
    assert table.context_window("no-such-model-xyz") is None


def test_unknown_model_is_an_error_naming_it_and_the_fix_never_zero() -> None:
    table = PriceTable.load()
    with pytest.raises(UnknownModelPrice) as info:
        table.get("meta-llama/Llama-3.1-8B-Instruct")
    message = str(info.value)
    assert "meta-llama/Llama-3.1-8B-Instruct" in message
    assert "prices:" in message and "USD per 1M tokens" in message
    assert isinstance(info.value, KeyError)
    assert "meta-llama/Llama-3.1-8B-Instruct" not in table


def test_entry_without_per_token_prices_says_so() -> None:
    raw = json.loads(litellm_price_file().read_text())  # type: ignore[union-attr]
    unpriced = next(
        name
        for name, entry in raw.items()
        if isinstance(entry, dict)
        and name != "sample_spec"
        and "input_cost_per_token" not in entry
        and "output_cost_per_token" not in entry
    )
    with pytest.raises(UnknownModelPrice, match="without per-token"):
        PriceTable.load().get(unpriced)


def test_table_is_read_once_per_process() -> None:
    first = PriceTable.load()
    second = PriceTable.load({"my-model": {"input": 1, "output": 2}})
    # Both tables share the same parsed ModelPrice objects from the one cached read.
    assert first.get("gpt-4o-mini") is second.get("gpt-4o-mini")


def test_loading_prices_does_not_import_litellm() -> None:
    code = (
        "import sys; from costing import PriceTable; t = PriceTable.load(); "
        "t.get('gpt-4o-mini'); print('litellm' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- overrides


def test_override_adds_a_model_in_usd_per_million() -> None:
    table = PriceTable.load({"my-llama": {"input": 0.10, "output": 0.40, "cached_input": 0.05}})
    price = table.get("my-llama")
    assert price.input == pytest.approx(0.10e-6, rel=1e-12)
    assert price.output == pytest.approx(0.40e-6, rel=1e-12)
    assert price.cached_input == pytest.approx(0.05e-6, rel=1e-12)
    assert price.batch_input is None
    # 1M prompt tokens at $0.10/1M costs $0.10.
    assert api_cost(price, 1_000_000, 0) == pytest.approx(0.10, rel=1e-12)


def test_partial_override_keeps_the_other_table_fields() -> None:
    base = PriceTable.load().get("gpt-4o-mini")
    table = PriceTable.load({"gpt-4o-mini": {"input": 1.0}})
    price = table.get("gpt-4o-mini")
    assert price.input == pytest.approx(1e-6, rel=1e-12)
    assert price.output == base.output
    assert price.cached_input == base.cached_input
    assert "gpt-4o-mini" in table.overridden


def test_override_of_a_new_model_needs_input_and_output() -> None:
    with pytest.raises(ValueError, match=r"prices\.brand-new.*output"):
        PriceTable.load({"brand-new": {"input": 1.0}})


@pytest.mark.parametrize(
    ("entry", "pattern"),
    [
        ({"input": 1, "output": 1, "inptu": 2}, "unknown key"),
        ({"input": -1, "output": 1}, ">= 0"),
        ({"input": "cheap", "output": 1}, "expected USD"),
    ],
)
def test_bad_override_is_rejected_with_its_path(entry: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as info:
        PriceTable.load({"m": entry})
    assert "prices.m" in str(info.value)


def test_explicit_price_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
                "m1": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
                "emb": {"input_cost_per_token": 1e-8, "mode": "embedding"},
                "img": {"output_cost_per_image": 0.04, "mode": "image_generation"},
            }
        )
    )
    table = PriceTable.load(price_file=path)
    assert table.get("m1") == ModelPrice(input=1e-6, output=2e-6)
    assert table.get("emb") == ModelPrice(input=1e-8, output=0.0)  # embeddings: no output
    assert table.find("sample_spec") is None
    with pytest.raises(UnknownModelPrice, match="without per-token"):
        table.get("img")


# ---------------------------------------------------------------- api_cost


def test_api_cost_formula_by_hand() -> None:
    price = ModelPrice.per_million(input=3.0, output=15.0, cached_input=0.30)
    # 1,000 prompt (400 cached) + 500 completion:
    # 600 × $3/1M + 400 × $0.30/1M + 500 × $15/1M = 0.0018 + 0.00012 + 0.0075 = $0.00942
    assert api_cost(price, 1000, 500, cached_tokens=400) == pytest.approx(0.00942, rel=1e-12)
    assert api_cost(price, 1000, 500) == pytest.approx(0.0105, rel=1e-12)


def test_cached_tokens_without_a_cached_price_pay_full_input() -> None:
    price = ModelPrice.per_million(input=2.0, output=8.0)
    assert api_cost(price, 1000, 100, cached_tokens=600) == api_cost(price, 1000, 100)


def test_cached_tokens_are_clamped_to_prompt_tokens() -> None:
    price = ModelPrice.per_million(input=2.0, output=8.0, cached_input=0.5)
    assert api_cost(price, 100, 0, cached_tokens=500) == pytest.approx(100 * 0.5e-6, rel=1e-12)


def test_batch_tier_from_the_table_and_from_a_discount() -> None:
    table_price = PriceTable.load().get("gpt-4o-mini")
    assert table_price.batch_input is not None and table_price.batch_output is not None
    expected = 1000 * table_price.batch_input + 200 * table_price.batch_output
    assert api_cost(table_price, 1000, 200, batch=True) == pytest.approx(expected, rel=1e-12)

    seed = ModelPrice(input=2e-6, output=2e-6)
    assert api_cost(seed, 1000, 0, batch=True) == api_cost(seed, 1000, 0)  # no tier known
    half = ApiCost(seed, batch=True, batch_discount=0.5)  # the seed's "50% discount (async)"
    assert half.request_cost(1000, 0) == pytest.approx(0.001, rel=1e-12)
    assert half.monthly_cost(5_000_000, 1000, 0) == pytest.approx(5_000.0, rel=1e-12)


def test_model_price_rejects_negative_or_nan() -> None:
    with pytest.raises(ValueError):
        ModelPrice(input=-1e-6, output=0.0)
    with pytest.raises(ValueError):
        ModelPrice(input=math.nan, output=0.0)


prices = st.builds(
    ModelPrice.per_million,
    input=st.floats(0, 100),
    output=st.floats(0, 100),
    cached_input=st.none() | st.floats(0, 100),
    batch_input=st.none() | st.floats(0, 100),
    batch_output=st.none() | st.floats(0, 100),
)
tokens = st.integers(0, 2_000_000)


@given(prices, tokens, tokens, tokens, st.booleans())
def test_api_cost_is_non_negative(
    price: ModelPrice, prompt: int, completion: int, cached: int, batch: bool
) -> None:
    assert api_cost(price, prompt, completion, min(cached, prompt), batch) >= 0


@given(prices, tokens, tokens, st.integers(1, 1000))
def test_api_cost_is_monotone_in_tokens(
    price: ModelPrice, prompt: int, completion: int, more: int
) -> None:
    base = api_cost(price, prompt, completion)
    assert api_cost(price, prompt + more, completion) >= base
    assert api_cost(price, prompt, completion + more) >= base


@given(prices, tokens, tokens, tokens)
def test_caching_never_costs_more_when_the_cached_price_is_lower(
    price: ModelPrice, prompt: int, completion: int, cached: int
) -> None:
    assume(price.cached_input is None or price.cached_input <= price.input)
    cached = min(cached, prompt)
    assert api_cost(price, prompt, completion, cached) <= api_cost(price, prompt, completion) * (
        1 + 1e-12
    )
