"""Pay-per-token API cost: the proxy's per-request price and the API side of every TCO.

`api_cost` runs once per request on the proxy's hot path, so it is a few attribute
reads and multiplications: no allocation, no lookups, no library calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from costing.prices import ModelPrice


def api_cost(
    price: ModelPrice,
    prompt_tokens: float,
    completion_tokens: float,
    cached_tokens: float = 0,
    batch: bool = False,
    cache_write_tokens: float = 0,
) -> float:
    """USD for one request.

    cost = (prompt − cached − written) × input + cached × cached_input
           + written × cache_write_input + completion × output

    Token counts follow OpenAI's `usage`: `cached_tokens` is the part of `prompt_tokens`
    served from the prompt cache (clamped to `prompt_tokens`). Prices are USD per token.
    Cached tokens with no known cached price are charged the full input price (no
    discount assumed). With `batch=True` the batch tier replaces input/output where the
    table has one, else the standard price applies (use `ApiCost(batch_discount=...)`
    to model a discount the table does not know). `cache_write_tokens` are prompt tokens
    written to the prompt cache (Anthropic's `cache_creation_input_tokens`, part of
    `prompt_tokens` as OpenAI counts it), charged the cache-write price where known, else
    the input price.
    """
    if cache_write_tokens:
        if cache_write_tokens > prompt_tokens:
            cache_write_tokens = prompt_tokens
        write_rate = price.cache_write_input
        if write_rate is None:
            write_rate = price.input
        return cache_write_tokens * write_rate + api_cost(
            price, prompt_tokens - cache_write_tokens, completion_tokens, cached_tokens, batch
        )
    if batch:
        in_rate = price.input if price.batch_input is None else price.batch_input
        out_rate = price.output if price.batch_output is None else price.batch_output
    else:
        in_rate = price.input
        out_rate = price.output
    if cached_tokens:
        if cached_tokens > prompt_tokens:
            cached_tokens = prompt_tokens
        cached_rate = price.cached_input
        if cached_rate is None:
            cached_rate = in_rate
        return (
            (prompt_tokens - cached_tokens) * in_rate
            + cached_tokens * cached_rate
            + completion_tokens * out_rate
        )
    return prompt_tokens * in_rate + completion_tokens * out_rate


@dataclass(frozen=True, slots=True)
class ApiCost:
    """A pay-per-token API as a cost model (for TCO; the proxy calls `api_cost` directly).

    `batch=True` prices the async batch tier (the seed's "50% discount (async)"). Where
    the table has no batch price, `batch_discount` (0.5 = 50% off) derives one:
    batch price = standard price × (1 − batch_discount).
    """

    price: ModelPrice
    batch: bool = False
    batch_discount: float | None = None
    _effective: ModelPrice = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.batch_discount is not None and not 0 <= self.batch_discount <= 1:
            raise ValueError(f"batch_discount must be in [0, 1], got {self.batch_discount}")
        effective = self.price
        if self.batch and self.batch_discount is not None:
            keep = 1 - self.batch_discount
            effective = ModelPrice(
                input=effective.input,
                output=effective.output,
                cached_input=effective.cached_input,
                batch_input=(
                    effective.input * keep
                    if effective.batch_input is None
                    else effective.batch_input
                ),
                batch_output=(
                    effective.output * keep
                    if effective.batch_output is None
                    else effective.batch_output
                ),
            )
        object.__setattr__(self, "_effective", effective)

    def request_cost(
        self, prompt_tokens: float, completion_tokens: float, cached_tokens: float = 0
    ) -> float:
        """USD for one request: `api_cost` with this model's tier (see its formula)."""
        return api_cost(
            self._effective, prompt_tokens, completion_tokens, cached_tokens, self.batch
        )

    def monthly_cost(
        self,
        requests_per_month: float,
        prompt_tokens: float,
        completion_tokens: float,
        cached_tokens: float = 0,
    ) -> float:
        """USD per month: requests_per_month × request_cost(tokens per request)."""
        return requests_per_month * self.request_cost(
            prompt_tokens, completion_tokens, cached_tokens
        )


def blended_price(parts: Iterable[tuple[ModelPrice, float, float, float]]) -> ModelPrice:
    """One price for traffic served at several: each tier's rate weighted by the tokens of
    that tier, so that `api_cost(blend, Σprompt, Σcompletion, Σcached)` equals the sum of
    each part's `api_cost`. Parts are (price, prompt, completion, cached) token totals; a
    tier nobody used takes the plain average of the parts' rates."""
    rows = [(p, max(0.0, pr - min(ca, pr)), co, min(ca, pr)) for p, pr, co, ca in parts]
    if not rows:
        raise ValueError("blended_price needs at least one price")

    prices = [r[0] for r in rows]

    def weighted(rate: Callable[[ModelPrice], float], tokens: list[float]) -> float:
        total = sum(tokens)
        if total <= 0:
            return sum(rate(p) for p in prices) / len(prices)
        return sum(rate(p) * n for p, n in zip(prices, tokens, strict=True)) / total

    return ModelPrice(
        input=weighted(lambda p: p.input, [r[1] for r in rows]),
        output=weighted(lambda p: p.output, [r[2] for r in rows]),
        cached_input=weighted(
            lambda p: p.input if p.cached_input is None else p.cached_input, [r[3] for r in rows]
        ),
    )
