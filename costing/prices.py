"""Per-token prices: litellm's bundled table, read once, with config overrides on top.

Why not call litellm: its cost functions take ~70 µs and importing it costs seconds and
~190 MB. The proxy prices every request, so the table is flattened once into plain
`ModelPrice` objects (USD per token) and a lookup is one dict access.

The only I/O in `costing/` is reading litellm's JSON file, located with
`importlib.util.find_spec` so litellm itself is never imported and never reaches for
the network. litellm is a core dependency (pyproject.toml), so the table is there on a plain
install; should it be missing all the same, the table is empty and only config prices apply.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from costing.units import TOKENS_PER_MILLION

LITELLM_PRICE_FILE: Final[str] = "model_prices_and_context_window_backup.json"

# Config `prices:` key -> ModelPrice field. The config is USD per 1M tokens.
OVERRIDE_KEYS: Final[tuple[str, ...]] = (
    "input",
    "output",
    "cached_input",
    "cache_write_input",
    "batch_input",
    "batch_output",
)

# litellm's `mode` -> the kind of traffic a model serves, as the proxy's endpoints name it.
MODE_KINDS: Final[dict[str, str]] = {
    "chat": "chat",
    "completion": "chat",
    "responses": "chat",
    "embedding": "embeddings",
}

# litellm's JSON field -> ModelPrice field (both USD per token).
_LITELLM_FIELDS: Final[dict[str, str]] = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write_input",
    "input_cost_per_token_batches": "batch_input",
    "output_cost_per_token_batches": "batch_output",
}


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per token for one model; `None` means the tier is not offered or not known.

    Per token (not per 1K or 1M) so pricing a request is plain multiplication.
    """

    input: float
    output: float
    cached_input: float | None = None
    batch_input: float | None = None
    batch_output: float | None = None
    cache_write_input: float | None = None  # a prompt-cache write (Anthropic's cache creation)

    def __post_init__(self) -> None:
        for name in OVERRIDE_KEYS:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} price must be a finite USD amount >= 0, got {value!r}")

    @classmethod
    def per_million(
        cls,
        input: float,
        output: float,
        cached_input: float | None = None,
        batch_input: float | None = None,
        batch_output: float | None = None,
        cache_write_input: float | None = None,
    ) -> ModelPrice:
        """Build from USD per 1M tokens (the unit of config and vendor price pages):
        each field = usd_per_1m / 1,000,000 (USD per token)."""
        return cls(
            input=input / TOKENS_PER_MILLION,
            output=output / TOKENS_PER_MILLION,
            cached_input=None if cached_input is None else cached_input / TOKENS_PER_MILLION,
            batch_input=None if batch_input is None else batch_input / TOKENS_PER_MILLION,
            batch_output=None if batch_output is None else batch_output / TOKENS_PER_MILLION,
            cache_write_input=(
                None if cache_write_input is None else cache_write_input / TOKENS_PER_MILLION
            ),
        )


class UnknownModelPrice(KeyError):
    """No price for a model: an error, never a silent $0 (which would make a model look free)."""

    def __init__(self, model: str, detail: str = "") -> None:
        self.model = model
        hint = (
            f"no price known for model {model!r}{detail}. Add it to hybridgate.yaml, in USD per "
            f"1M tokens:\n  prices:\n    {model}: {{input: <USD>, output: <USD>}}"
        )
        super().__init__(hint)
        self.message = hint

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and escaped newlines
        return self.message


@dataclass(frozen=True, slots=True)
class _Bundled:
    """litellm's table, flattened: prices, context windows, and entries we cannot price."""

    prices: dict[str, ModelPrice]
    context_windows: dict[str, int]
    unpriced: frozenset[str]
    source: str
    kinds: dict[str, str] = dataclasses.field(default_factory=dict)


def litellm_price_file() -> Path | None:
    """Path of litellm's bundled price JSON, found without importing litellm; None if absent."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / LITELLM_PRICE_FILE
        if candidate.is_file():
            return candidate
    return None


def _parse_entry(entry: Mapping[str, Any]) -> ModelPrice | None:
    """One litellm entry -> ModelPrice, or None when it has no per-token input/output price."""
    values: dict[str, float] = {}
    for src, dst in _LITELLM_FIELDS.items():
        raw = entry.get(src)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            values[dst] = float(raw)
    if "input" in values and "output" not in values and entry.get("mode") == "embedding":
        values["output"] = 0.0  # embeddings produce no output tokens
    if "input" not in values or "output" not in values:
        return None
    return ModelPrice(**values)


@functools.cache
def _bundled(path: Path | None) -> _Bundled:
    """Read and flatten litellm's JSON once per process (cached per path)."""
    if path is None:
        return _Bundled({}, {}, frozenset(), "none (litellm not installed)")
    with path.open("rb") as fh:
        raw: dict[str, Any] = json.load(fh)
    prices: dict[str, ModelPrice] = {}
    windows: dict[str, int] = {}
    unpriced: set[str] = set()
    kinds: dict[str, str] = {}
    for name, entry in raw.items():
        if name == "sample_spec" or not isinstance(entry, dict):
            continue
        mode = entry.get("mode")
        if isinstance(mode, str):
            kinds[name] = MODE_KINDS.get(mode, mode)
        window = entry.get("max_input_tokens")
        if isinstance(window, int) and not isinstance(window, bool) and window > 0:
            windows[name] = window
        price = _parse_entry(entry)
        if price is None:
            unpriced.add(name)
        else:
            prices[name] = price
    return _Bundled(prices, windows, frozenset(unpriced), str(path), kinds)


def _strip_provider(model: str) -> str | None:
    """`openai/gpt-4o-mini` -> `gpt-4o-mini`; None when there is no `provider/` prefix."""
    provider, sep, rest = model.partition("/")
    return rest if sep and provider and rest else None


class PriceTable:
    """Model name -> `ModelPrice` (USD per token), litellm's table with config overrides.

    Lookup tries the exact name, then the name without its `provider/` prefix, the way
    litellm keys its table (`gpt-4o-mini`, `anthropic/...` or bare `claude-...`).
    """

    __slots__ = ("_context_windows", "_kinds", "_prices", "_unpriced", "overridden", "source")

    def __init__(
        self,
        prices: Mapping[str, ModelPrice],
        context_windows: Mapping[str, int] | None = None,
        *,
        unpriced: frozenset[str] = frozenset(),
        overridden: frozenset[str] = frozenset(),
        source: str = "explicit",
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        self._kinds: dict[str, str] = dict(kinds or {})
        self._prices: dict[str, ModelPrice] = dict(prices)
        self._context_windows: dict[str, int] = dict(context_windows or {})
        self._unpriced = unpriced
        self.overridden = overridden
        self.source = source

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Mapping[str, float]] | None = None,
        *,
        price_file: Path | None = None,
    ) -> PriceTable:
        """litellm's bundled table plus config `prices:` overrides.

        Overrides are USD per 1M tokens, keys `input`, `output`, `cached_input`,
        `cache_write_input`, `batch_input`, `batch_output`; each becomes usd_per_1m / 1e6
        USD per token. An override of a known model replaces only the fields it names; a
        new model needs
        `input` and `output`. `price_file` defaults to the JSON shipped with litellm.
        """
        bundled = _bundled(price_file if price_file is not None else litellm_price_file())
        prices = dict(bundled.prices)
        for model, entry in (overrides or {}).items():
            prices[model] = _apply_override(model, entry, _find(prices, model))
        return cls(
            prices,
            bundled.context_windows,
            unpriced=bundled.unpriced,
            overridden=frozenset(overrides or ()),
            source=bundled.source,
            kinds=bundled.kinds,
        )

    def get(self, model: str) -> ModelPrice:
        """Price of `model` (USD per token); raises `UnknownModelPrice`, never returns $0."""
        price = self._prices.get(model)
        if price is not None:
            return price
        price = self.find(model)
        if price is None:
            raise UnknownModelPrice(model, self._why_unknown(model))
        return price

    def find(self, model: str) -> ModelPrice | None:
        """Price of `model` (USD per token), or None: exact name, then without `provider/`."""
        return _find(self._prices, model)

    def context_window(self, model: str) -> int | None:
        """Max input tokens for `model` from litellm's table (tokens), or None if unknown."""
        window = self._context_windows.get(model)
        if window is None:
            bare = _strip_provider(model)
            if bare is not None:
                window = self._context_windows.get(bare)
        return window

    def kind(self, model: str) -> str | None:
        """What a model serves per litellm's table: `chat` (chat and text completions),
        `embeddings`, another litellm mode, or None when the table does not say."""
        kind = self._kinds.get(model)
        if kind is None:
            bare = _strip_provider(model)
            if bare is not None:
                kind = self._kinds.get(bare)
        return kind

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.find(model) is not None

    def __len__(self) -> int:
        return len(self._prices)

    def _why_unknown(self, model: str) -> str:
        bare = _strip_provider(model)
        if model in self._unpriced or (bare is not None and bare in self._unpriced):
            return " (litellm's table lists it, but without per-token input and output prices)"
        if not self._prices:
            return f" (price table source: {self.source})"
        return ""


def _find(prices: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    price = prices.get(model)
    if price is None:
        bare = _strip_provider(model)
        if bare is not None:
            price = prices.get(bare)
    return price


def _apply_override(model: str, entry: Mapping[str, float], base: ModelPrice | None) -> ModelPrice:
    """Merge one config `prices:` entry (USD per 1M tokens) over `base` (USD per token)."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"prices.{model}: expected a mapping of USD per 1M tokens, got {entry!r}")
    unknown = sorted(set(entry) - set(OVERRIDE_KEYS))
    if unknown:
        raise ValueError(
            f"prices.{model}: unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(OVERRIDE_KEYS)} (USD per 1M tokens)"
        )
    per_token: dict[str, float] = {}
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"prices.{model}.{key}: expected USD per 1M tokens, got {value!r}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"prices.{model}.{key}: must be >= 0, got {value!r}")
        per_token[key] = value / TOKENS_PER_MILLION
    if base is None:
        missing = [k for k in ("input", "output") if k not in per_token]
        if missing:
            raise ValueError(
                f"prices.{model}: model is not in litellm's table, so {' and '.join(missing)} "
                "must be given (USD per 1M tokens)"
            )
        return ModelPrice(**per_token)
    return replace(base, **per_token)
