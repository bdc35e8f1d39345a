"""Routing rules: what matches, and that the first match wins."""

from __future__ import annotations

from proxy.config import Rule
from proxy.routing.rules import Rules


def rules(*specs: dict) -> Rules:
    return Rules([Rule.model_validate(s) for s in specs])


def test_first_matching_rule_wins_and_no_match_is_none() -> None:
    r = rules(
        {"name": "a", "when": {"tenant": "team-a"}, "prefer": "api"},
        {"name": "b", "when": {}, "prefer": "self_hosted"},
    )
    assert r.match("team-a", {}, {}, 0).name == "a"
    assert r.match("team-b", {}, {}, 0).name == "b"
    assert rules({"when": {"tenant": "x"}, "only": "api"}).match("y", {}, {}, 0) is None


def test_tenant_may_be_a_list() -> None:
    r = rules({"when": {"tenant": ["a", "b"]}, "only": "self_hosted"})
    assert r.match("a", {}, {}, 0) is not None
    assert r.match("b", {}, {}, 0) is not None
    assert r.match("c", {}, {}, 0) is None


def test_headers_match_case_insensitive_names_exact_values_and_star_for_present() -> None:
    r = rules({"when": {"header": {"X-Data-Class": "confidential"}}, "only": "self_hosted"})
    assert r.match("t", {b"x-data-class": b"confidential"}, {}, 0) is not None
    assert r.match("t", {b"x-data-class": b"public"}, {}, 0) is None
    assert r.match("t", {}, {}, 0) is None
    star = rules({"when": {"header": {"x-pii": "*"}}, "only": "self_hosted"})
    assert star.match("t", {b"x-pii": b"anything"}, {}, 0) is not None
    assert star.match("t", {}, {}, 0) is None


def test_metadata_and_user_come_from_the_body() -> None:
    r = rules({"when": {"metadata": {"data_class": "phi"}, "user": "u1"}, "only": "self_hosted"})
    assert r.match("t", {}, {"metadata": {"data_class": "phi"}, "user": "u1"}, 0) is not None
    assert r.match("t", {}, {"metadata": {"data_class": "phi"}, "user": "u2"}, 0) is None
    assert r.match("t", {}, {"metadata": {"data_class": "x"}, "user": "u1"}, 0) is None
    assert r.match("t", {}, {"metadata": "phi", "user": "u1"}, 0) is None
    assert r.match("t", {}, {"user": "u1"}, 0) is None


def test_prompt_token_bounds_are_inclusive() -> None:
    r = rules({"name": "long", "when": {"min_prompt_tokens": 1000, "max_prompt_tokens": 2000}})
    assert r.match("t", {}, {}, 999) is None
    assert r.match("t", {}, {}, 1000) is not None
    assert r.match("t", {}, {}, 2000) is not None
    assert r.match("t", {}, {}, 2001) is None


def test_unnamed_rules_are_named_by_their_place() -> None:
    r = rules({"when": {"tenant": "x"}}, {"when": {}})
    assert r.match("y", {}, {}, 0).name == "rules[1]"
