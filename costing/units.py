"""Calendar and unit constants shared by every cost model.

A month is a modelling choice, not a fact: 730 h is the average month (8,760 h / 12),
720 h is the 30-day month the seed article uses. Every result records which one it used.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Final

HOURS_PER_MONTH_DEFAULT: Final[int] = 730
"""Average hours in a month (365 days × 24 h / 12); the default for every monthly figure."""

SEED_HOURS_PER_MONTH: Final[int] = 720
"""The seed article's month (30 days × 24 h); used only to reproduce its numbers."""

SECONDS_PER_HOUR: Final[int] = 3600

TOKENS_PER_MILLION: Final[int] = 1_000_000
"""Config `prices:` entries are USD per 1M tokens; the table stores USD per token."""

CENT: Final[Decimal] = Decimal("0.01")


def seconds_per_month(hours_per_month: float = HOURS_PER_MONTH_DEFAULT) -> float:
    """Seconds in a month: hours_per_month × 3600 (s)."""
    if hours_per_month <= 0:
        raise ValueError(f"hours_per_month must be positive, got {hours_per_month}")
    return hours_per_month * SECONDS_PER_HOUR


def to_cents(usd: float) -> Decimal:
    """USD rounded half-up to the cent (Decimal), the way a finance reader rounds."""
    return Decimal(repr(usd)).quantize(CENT, rounding=ROUND_HALF_UP)


def format_usd(usd: float) -> str:
    """`$1,234.57`: USD to the cent with thousands separators; negatives as `-$1.00`."""
    cents = to_cents(usd)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"
