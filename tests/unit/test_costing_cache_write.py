"""Prompt-cache writes priced apart (Anthropic's cache_creation_input_tokens), pure."""

from __future__ import annotations

import pytest

from costing.api import api_cost
from costing.prices import ModelPrice, PriceTable


def test_litellm_table_carries_claude_cache_read_and_write_prices() -> None:
    p = PriceTable.load().get("claude-sonnet-4-5")
    assert p.cached_input is not None and p.cache_write_input is not None
    assert p.cached_input < p.input < p.cache_write_input  # reads are cheap, writes dear


def test_cost_splits_prompt_into_plain_cache_read_and_cache_write() -> None:
    price = ModelPrice.per_million(3, 15, cached_input=0.3, cache_write_input=3.75)
    # 1000 prompt tokens: 600 plain, 300 read from the cache, 100 written to it.
    cost = api_cost(price, 1000, 50, cached_tokens=300, cache_write_tokens=100)
    expected = (600 * 3 + 300 * 0.3 + 100 * 3.75 + 50 * 15) / 1e6
    assert cost == pytest.approx(expected, rel=1e-12)


def test_cache_write_without_a_price_is_charged_the_input_price() -> None:
    price = ModelPrice.per_million(3, 15)
    assert api_cost(price, 1000, 0, cache_write_tokens=400) == pytest.approx(1000 * 3 / 1e6)
    # and never more write tokens than prompt tokens
    assert api_cost(price, 10, 0, cache_write_tokens=50) == pytest.approx(10 * 3 / 1e6)


def test_no_cache_write_is_the_old_formula() -> None:
    price = ModelPrice.per_million(3, 15, cached_input=0.3, cache_write_input=3.75)
    assert api_cost(price, 1000, 50, 300) == pytest.approx((700 * 3 + 300 * 0.3 + 50 * 15) / 1e6)
