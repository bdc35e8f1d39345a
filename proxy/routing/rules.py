"""Routing rules (config `rules:`): the first rule whose `when` matches a request decides.

A rule matches on any of: tenant (one or a list), request headers (name → value, `*` =
present), request metadata (the body's `metadata` object), the body's `user` field,
and estimated prompt tokens (`min_prompt_tokens` / `max_prompt_tokens`). All conditions
given must hold; a rule with no conditions matches everything.

Its effects: `only: self_hosted | api` (the plan keeps only those targets; with
`self_hosted` this is how a data class is kept away from third parties, and it holds
through failover because failover only walks the plan), `prefer: self_hosted | api`
(those targets first, the rest after), `route_to: ALIAS` (plan that alias instead).

Matching is a few dict lookups per rule, compiled once per config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.config import Rule


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    tenants: frozenset[str] | None
    headers: tuple[tuple[bytes, bytes | None], ...]  # value None: the header is present
    metadata: tuple[tuple[str, str], ...]
    user: str | None
    min_prompt_tokens: int | None
    max_prompt_tokens: int | None
    only: str | None
    prefer: str | None
    route_to: str | None

    def matches(
        self, tenant: str, headers: dict[bytes, bytes], body: dict[str, Any], est_tokens: int
    ) -> bool:
        if self.tenants is not None and tenant not in self.tenants:
            return False
        for name, value in self.headers:
            got = headers.get(name)
            if got is None or (value is not None and got != value):
                return False
        if self.metadata:
            meta = body.get("metadata")
            if not isinstance(meta, dict):
                return False
            for key, want in self.metadata:
                got = meta.get(key)
                if got is None or (got if isinstance(got, str) else str(got)) != want:
                    return False
        if self.user is not None and body.get("user") != self.user:
            return False
        if self.min_prompt_tokens is not None and est_tokens < self.min_prompt_tokens:
            return False
        return self.max_prompt_tokens is None or est_tokens <= self.max_prompt_tokens


def compile_rule(i: int, rule: Rule) -> CompiledRule:
    w = rule.when
    tenants: frozenset[str] | None = None
    if w.tenant is not None:
        tenants = frozenset([w.tenant] if isinstance(w.tenant, str) else w.tenant)
    headers = tuple(
        (k.lower().encode("latin-1"), None if v == "*" else v.encode("latin-1"))
        for k, v in (w.header or {}).items()
    )
    return CompiledRule(
        name=rule.name or f"rules[{i}]",
        tenants=tenants,
        headers=headers,
        metadata=tuple((w.metadata or {}).items()),
        user=w.user,
        min_prompt_tokens=w.min_prompt_tokens,
        max_prompt_tokens=w.max_prompt_tokens,
        only=rule.only,
        prefer=rule.prefer,
        route_to=rule.route_to,
    )


class Rules:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = [compile_rule(i, r) for i, r in enumerate(rules)]

    def match(
        self, tenant: str, headers: dict[bytes, bytes], body: dict[str, Any], est_tokens: int
    ) -> CompiledRule | None:
        """The first matching rule, or None."""
        for rule in self.rules:
            if rule.matches(tenant, headers, body, est_tokens):
                return rule
        return None
