"""Pure cost arithmetic: prices, cost models, TCO and breakeven (no network, no web).

The only I/O is reading litellm's bundled price JSON once (`costing.prices`). Units
are USD, seconds and tokens throughout; months are `HOURS_PER_MONTH_DEFAULT` (730 h)
unless a caller says otherwise, and every result records the hours it used.
"""

from __future__ import annotations

from costing.api import ApiCost, api_cost
from costing.prices import ModelPrice, PriceTable, UnknownModelPrice
from costing.units import HOURS_PER_MONTH_DEFAULT, SEED_HOURS_PER_MONTH

__all__ = [
    "HOURS_PER_MONTH_DEFAULT",
    "SEED_HOURS_PER_MONTH",
    "ApiCost",
    "ModelPrice",
    "PriceTable",
    "UnknownModelPrice",
    "api_cost",
]
