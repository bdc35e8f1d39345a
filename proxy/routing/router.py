"""Plans the ordered attempts for a request: which backends, in which order, with which model.

The router knows nothing of HTTP: it sees the alias, the request's routing facts, and live
state (in-flight counts, breakers, health, engine metrics, latency), and returns targets
in the order to try them. The handler walks that order; failover never leaves it, which
is what makes `only: self_hosted` hold whatever happens.

A plan is built in four steps, each a filter or a sort over a handful of targets:
1. rules: the first matching rule may send the request to another alias (`route_to`),
   keep only self-hosted or API targets (`only`), or put one kind first (`prefer`);
2. context: targets whose window the estimated prompt does not fit are skipped (if none
   fits, the largest window is kept and the upstream has the last word);
3. availability: targets whose breaker is open or whose health checks fail are skipped;
4. strategy: the alias's `strategy` orders what is left.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from costing.prices import PriceTable
from proxy.config import Config, ModelAlias, Spillover, Target
from proxy.request.errors import ProxyError
from proxy.routing.rules import CompiledRule, Rules

DEFAULT_COMPLETION_TOKENS = 256  # `cheapest` when the request sets no max_tokens


@dataclass(frozen=True, slots=True)
class PlannedTarget:
    backend: str
    model: str
    self_hosted: bool
    context_window: int | None  # from config or the price table; engines may report more
    target: Target
    max_concurrency: int = 256
    pool: str | None = None
    in_rate: float | None = None  # API USD per prompt token (None: unknown or self-hosted)
    out_rate: float | None = None


@dataclass(slots=True)
class RouteRequest:
    """What routing needs to know about a request (parsed once, minimally)."""

    alias: str
    tenant: str
    headers: dict[bytes, bytes]
    body: dict[str, Any]
    est_prompt_tokens: int
    # Set by budget policy: "self_hosted" for a tenant over budget; "priced" for a tenant
    # with an API budget (an API target without a price would serve it uncounted).
    only: str | None = None


class Plan:
    """The targets to try, in order, for one request (a sequence, for the attempts loop)."""

    __slots__ = ("_router", "alias", "rule", "spec", "targets")

    def __init__(
        self,
        router: Router,
        alias: str,
        spec: ModelAlias,
        targets: list[PlannedTarget],
        rule: CompiledRule | None,
    ) -> None:
        self._router = router
        self.alias = alias
        self.spec = spec
        self.targets = targets
        self.rule = rule

    def __len__(self) -> int:
        return len(self.targets)

    def __iter__(self) -> Iterator[PlannedTarget]:
        return iter(self.targets)

    def __getitem__(self, i: int) -> PlannedTarget:
        return self.targets[i]

    def larger_window_after(self, i: int) -> bool:
        """After a context-length 400 from target i: is a later target worth trying?

        Yes when a later target's window is larger, or unknown (an API whose window the
        price table does not know); no when every later window is known and not larger.
        """
        window = self._router.window(self.targets[i])
        for t in self.targets[i + 1 :]:
            w = self._router.window(t)
            if w is None or window is None or w > window:
                return True
        return False


class NoRoute(ProxyError):
    """No target may serve this request right now (503, with Retry-After when known)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        headers = []
        if retry_after is not None and retry_after > 0:
            headers.append((b"retry-after", str(math.ceil(retry_after)).encode()))
        super().__init__(
            503, message, code="no_backend_available", headers=headers, outcome="error"
        )


class Router:
    def __init__(
        self,
        config: Config,
        prices: PriceTable | None = None,
        control: Any = None,
        inflight: dict[str, int] | None = None,
        marginal_cost: Callable[[str, int], float | None] | None = None,
    ) -> None:
        self.config = config
        self.control = control  # ControlPlane, or None: every target counts as available
        self.inflight = inflight if inflight is not None else dict.fromkeys(config.backends, 0)
        self._marginal_cost = marginal_cost
        self._prices = prices
        self.rules = Rules(config.rules)
        self._targets: dict[str, list[PlannedTarget]] = {}
        for alias, spec in config.models.items():
            self._targets[alias] = [self._planned(t) for t in spec.targets]
        # Aliases a budgeted tenant may use as they are: every API target has a price (or
        # no table was given, as in tests of routing alone).
        self._all_priced = frozenset(
            alias
            for alias, ts in self._targets.items()
            if prices is None or all(t.self_hosted or t.in_rate is not None for t in ts)
        )
        # Below the smallest window anywhere, no request needs the context check.
        self._window_floor = min(
            (t.context_window for ts in self._targets.values() for t in ts if t.context_window),
            default=math.inf,
        )
        self._order: dict[str, Callable[[list[PlannedTarget], RouteRequest, Spillover], Any]] = {
            "priority": lambda ts, req, lim: ts,
            "spillover": self._spillover,
            "cheapest": self._cheapest,
            "weighted": self._weighted,
            "least_busy": self._least_busy,
            "lowest_latency": self._lowest_latency,
        }

    def _planned(self, t: Target) -> PlannedTarget:
        b = self.config.backends[t.backend]
        window = t.context_window or b.context_window
        in_rate = out_rate = None
        if b.pool is None and self._prices is not None:
            price = self._prices.find(t.model)
            if price is not None:
                in_rate, out_rate = price.input, price.output
            if window is None:
                window = self._prices.context_window(t.model)
        return PlannedTarget(
            t.backend,
            t.model,
            b.pool is not None,
            window,
            t,
            b.max_concurrency,
            b.pool,
            in_rate,
            out_rate,
        )

    def alias(self, name: str) -> ModelAlias | None:
        return self.config.models.get(name)

    def window(self, t: PlannedTarget) -> int | None:
        """The target's context window: config, price table, or what its engine reports."""
        if t.context_window is not None or self.control is None:
            return t.context_window
        return self.control.engines.context_window(t.backend, t.model)

    # ------------------------------------------------------------ planning

    def plan(self, req: RouteRequest) -> Plan:
        """Targets in the order to try them; NoRoute if none may serve the request."""
        alias = req.alias
        rule: CompiledRule | None = None
        if self.rules.rules:
            rule = self.rules.match(req.tenant, req.headers, req.body, req.est_prompt_tokens)
            if rule is not None and rule.route_to is not None:
                alias = rule.route_to
        spec = self.config.models[alias]
        targets = self._targets[alias]
        if req.only is not None and not (req.only == "priced" and alias in self._all_priced):
            targets = self._only(targets, req.only, alias, rule, req.tenant)
        if rule is not None and rule.only is not None:
            targets = self._only(targets, rule.only, alias, rule)
        control = self.control
        est = req.est_prompt_tokens
        if est > self._window_floor or (control is not None and est > control.engines.min_window):
            targets = self._fit_context(targets, est)
        if control is not None and control.impaired:
            available = [t for t in targets if control.available(t.backend)]
            if len(available) != len(targets):
                if not available:
                    raise self._none_available(targets, alias, rule, req.only)
                targets = available
        if len(targets) > 1:
            targets = self._order[spec.strategy](targets, req, spec.spillover)
            prefer = rule.prefer if rule is not None else None
            if prefer is not None:
                first = prefer == "self_hosted"
                targets = [t for t in targets if t.self_hosted == first] + [
                    t for t in targets if t.self_hosted != first
                ]
        return Plan(self, alias, spec, targets, rule)

    def _only(
        self,
        targets: list[PlannedTarget],
        only: str,
        alias: str,
        rule: CompiledRule | None,
        tenant: str = "",
    ) -> list[PlannedTarget]:
        if only == "priced":
            return self._priced(targets, alias, tenant)
        keep = only == "self_hosted"
        out = [t for t in targets if t.self_hosted == keep]
        if not out:
            kind = "self-hosted" if keep else "API"
            why = _restriction(rule, only)
            raise NoRoute(
                f"Model '{alias}': this request may only be served by {kind} backends "
                f"({why}), and the model has no {kind} target."
            )
        return out

    def _priced(self, targets: list[PlannedTarget], alias: str, tenant: str) -> list[PlannedTarget]:
        """A budgeted tenant's targets: never an API model whose spend cannot be counted."""
        out = [t for t in targets if t.self_hosted or t.in_rate is not None]
        if not out:
            unpriced = sorted({t.model for t in targets})
            entries = ", ".join(f"prices.{m}" for m in unpriced)
            raise ProxyError(
                403,
                f"Model '{alias}': tenant '{tenant}' has an API budget, and the API model(s) "
                f"{', '.join(repr(m) for m in unpriced)} have no known price, so their spend "
                f"could not be counted against it. The operator must add {entries}: "
                "{input: <USD per 1M tokens>, output: <USD per 1M tokens>} to the config.",
                type_="permission_error",
                code="unpriced_model",
                outcome="rejected",
            )
        return out

    def _fit_context(self, targets: list[PlannedTarget], est: int) -> list[PlannedTarget]:
        fits = None
        for i, t in enumerate(targets):
            w = self.window(t)
            if w is not None and est > w:
                if fits is None:
                    fits = list(targets[:i])
            elif fits is not None:
                fits.append(t)
        if fits is None:
            return targets
        if fits:
            return fits
        # Nothing fits the estimate (a rough one): the largest window gets to decide.
        return [max(targets, key=lambda t: self.window(t) or 0)]

    def _none_available(
        self,
        targets: list[PlannedTarget],
        alias: str,
        rule: CompiledRule | None,
        policy_only: str | None,
    ) -> NoRoute:
        control = self.control
        names = list(dict.fromkeys(t.backend for t in targets))
        reasons = "; ".join(control.why_unavailable(b) for b in names)
        if policy_only == "priced":
            policy_only = None  # not a kind of backend: the budget's price rule
        only = rule.only if rule is not None and rule.only is not None else policy_only
        if only is not None:
            kind = "self-hosted" if only == "self_hosted" else "API"
            msg = (
                f"Model '{alias}': this request may only be served by {kind} backends "
                f"({_restriction(rule, only)}), and none is available right now ({reasons}). "
                f"It was not sent anywhere else."
            )
        else:
            msg = f"Model '{alias}': no backend is available right now ({reasons})."
        return NoRoute(msg, control.retry_after(names))

    # ------------------------------------------------------------ strategies

    def _spillover(
        self, targets: list[PlannedTarget], req: RouteRequest, lim: Spillover
    ) -> list[PlannedTarget]:
        """Self-hosted targets with headroom first; a saturated one goes to the end (the
        last resort if every API target fails, rather than an error)."""
        front: list[PlannedTarget] = []
        full: list[PlannedTarget] = []
        for t in targets:
            (full if t.self_hosted and not self._headroom(t, lim) else front).append(t)
        return front + full if full else targets

    def _headroom(self, t: PlannedTarget, lim: Spillover) -> bool:
        limit = lim.max_inflight if lim.max_inflight is not None else t.max_concurrency
        if self.inflight.get(t.backend, 0) >= limit:
            return False
        if self.control is None or (lim.max_waiting is None and lim.max_kv_cache is None):
            return True
        snap = self.control.engines.fresh(t.backend)
        if snap is None:
            return True  # no recent engine figures: in-flight count alone decides
        if (
            lim.max_waiting is not None
            and snap.waiting is not None
            and snap.waiting > lim.max_waiting
        ):
            return False
        return not (
            lim.max_kv_cache is not None
            and snap.kv_cache is not None
            and snap.kv_cache >= lim.max_kv_cache
        )

    def _cheapest(
        self, targets: list[PlannedTarget], req: RouteRequest, lim: Spillover
    ) -> list[PlannedTarget]:
        body = req.body
        completion = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(completion, int) or completion <= 0:
            completion = DEFAULT_COMPLETION_TOKENS
        prompt = req.est_prompt_tokens
        return sorted(targets, key=lambda t: self.expected_cost(t, prompt, completion))

    def expected_cost(self, t: PlannedTarget, prompt: int, completion: int) -> float:
        """USD this target would charge for the tokens: API prices, or the self-hosted
        marginal cost (tokens / measured throughput x USD per GPU-second; 0 until known,
        since the GPUs are paid for either way). An API without a price sorts last."""
        if t.self_hosted:
            if self._marginal_cost is None or t.pool is None:
                return 0.0
            cost = self._marginal_cost(t.pool, prompt + completion)
            return cost if cost is not None else 0.0
        if t.in_rate is None or t.out_rate is None:
            return math.inf
        return prompt * t.in_rate + completion * t.out_rate

    def _weighted(
        self, targets: list[PlannedTarget], req: RouteRequest, lim: Spillover
    ) -> list[PlannedTarget]:
        # Efraimidis-Spirakis: sorting by u^(1/w) draws the order in proportion to weight.
        return sorted(
            targets, key=lambda t: random.random() ** (1.0 / t.target.weight), reverse=True
        )

    def _least_busy(
        self, targets: list[PlannedTarget], req: RouteRequest, lim: Spillover
    ) -> list[PlannedTarget]:
        inflight = self.inflight
        return sorted(targets, key=lambda t: inflight.get(t.backend, 0) / t.max_concurrency)

    def _lowest_latency(
        self, targets: list[PlannedTarget], req: RouteRequest, lim: Spillover
    ) -> list[PlannedTarget]:
        if self.control is None:
            return targets
        now = time.monotonic()
        ewma = self.control.ttft_ewma
        return sorted(targets, key=lambda t: ewma(t.backend, now))


def _restriction(rule: CompiledRule | None, only: str) -> str:
    """Why a request is held to one kind of backend, for its error message."""
    if rule is not None and rule.only == only:
        return f"rule '{rule.name}'"
    return "the tenant's budget policy"
