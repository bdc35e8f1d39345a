"""What the deploy/ tree ships, read the way its consumers read it.

The shipped proxy config with .env.example's values, the Prometheus rules, and the
queries Grafana runs from the dashboard JSON (template variables substituted as Grafana
would for "All"), so the tests check exactly what users get.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.servers import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
SHIPPED_CONFIG = DEPLOY / "hybridgate.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
RULES_DIR = DEPLOY / "prometheus" / "rules"
DASHBOARDS_DIR = DEPLOY / "grafana" / "dashboards"

# Grafana's built-in variables, as the tests stand them in: the rate window spans the
# whole test's traffic, the range more than the whole test.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1s", "__range": "1h"}


def env_example() -> dict[str, str]:
    """.env.example as docker compose reads it: KEY=VALUE lines, comments skipped."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def shipped_config() -> dict[str, Any]:
    """deploy/hybridgate.yaml as data, `${VAR}` references left for the proxy to expand."""
    return yaml.safe_load(SHIPPED_CONFIG.read_text())


# ------------------------------------------------------------------ Prometheus rules


def rule_groups(name: str) -> list[dict[str, Any]]:
    return yaml.safe_load((RULES_DIR / name).read_text())["groups"]


def recording_rules() -> dict[str, str]:
    """Recorded name → expression, over every rule file."""
    out = {}
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    out[rule["record"]] = rule["expr"]
    return out


def alert_rules() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for path in sorted(RULES_DIR.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def alerts_test_copy(path: Path, replace: Mapping[str, Mapping[str, str]]) -> Path:
    """The shipped alerts with `for: 0s` and per-alert text replacements, written to `path`.

    `replace` maps an alert name to {old: new} substrings of its expression (shorter
    windows, lower thresholds); each `old` must be there, so a test cannot silently
    test something other than what ships.
    """
    groups = rule_groups("alerts.yml")
    seen = set()
    for group in groups:
        group["name"] += "-test-copy"
        for rule in group["rules"]:
            rule["for"] = "0s"
            for old, new in replace.get(rule["alert"], {}).items():
                if old not in rule["expr"]:
                    raise AssertionError(f"{rule['alert']}: {old!r} not in its expression")
                rule["expr"] = rule["expr"].replace(old, new)
            seen.add(rule["alert"])
    missing = set(replace) - seen
    if missing:
        raise AssertionError(f"no such alerts: {sorted(missing)}")
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


# ------------------------------------------------------------------ Grafana dashboards


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str  # as written in the dashboard
    promql: str  # with template variables substituted

    @property
    def id(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace `$name` and `${name}` as Grafana does, failing on an unknown name.

    `$1` is not a Grafana variable (names start with a letter): it stays, as in
    label_replace's replacement.
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in variables:
            raise KeyError(f"unknown template variable ${name} in {expr!r}")
        return variables[name]

    return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", repl, expr)


def dashboard_variables(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Each query variable as "All" (its allValue regex), plus Grafana's built-ins."""
    out = dict(GRAFANA_BUILTINS)
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            out[var["name"]] = var.get("allValue") or ".*"
    return out


def panel_queries() -> Iterator[PanelQuery]:
    for name, dash in dashboards().items():
        variables = dashboard_variables(dash)
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                yield PanelQuery(
                    name, panel["title"], target["refId"], expr, substitute(expr, variables)
                )


def variable_queries() -> Iterator[tuple[str, str, str, str]]:
    """(dashboard, variable, label, metric) of every label_values(metric, label) variable."""
    for name, dash in dashboards().items():
        for var in dash["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["definition"])
            if m is None:
                raise AssertionError(f"{name}: ${var['name']}: unexpected {var['definition']!r}")
            yield name, var["name"], m.group(2), m.group(1)


# ------------------------------------------------------------------ docker compose

COMPOSE_FILES = (REPO_ROOT / "docker-compose.yml", REPO_ROOT / "compose.cpu.yml")
_RESET = object()


class Override:
    """Compose's `!override`: replace the base file's value instead of merging into it."""

    def __init__(self, value: Any) -> None:
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    """PyYAML plus compose's `!reset` (drop the base value) and `!override` tags."""


def _construct(loader: yaml.SafeLoader, node: yaml.Node, override: bool) -> Any:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)  # type: ignore[arg-type]
    return Override(value) if override else _RESET


ComposeLoader.add_constructor("!reset", lambda lo, n: _construct(lo, n, False))
ComposeLoader.add_constructor("!override", lambda lo, n: _construct(lo, n, True))


def load_compose(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def merge_compose(base: Any, over: Any) -> Any:
    """Override files the way compose merges the parts our files use: mappings merge key
    by key, `!reset` drops, `!override` and everything else replaces."""
    if isinstance(over, Override):
        return over.value
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            if value is _RESET:
                out.pop(key, None)
            else:
                out[key] = merge_compose(base.get(key), value)
        return out
    return over


def compose_project(*paths: Path) -> dict[str, Any]:
    project: dict[str, Any] = {}
    for path in paths:
        project = merge_compose(project, load_compose(path))
    return project


_COMPOSE_VAR = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)")


def compose_variables(text: str) -> set[str]:
    """Variable names a compose file interpolates."""
    return {m.group(1) or m.group(4) for m in _COMPOSE_VAR.finditer(text) if m.group(0) != "$$"}


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string: ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}, $VAR and $$."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if unset and op in (":-", "-"):
            return arg
        if unset and op in (":?", "?"):
            raise KeyError(f"{name}: {arg}")
        return value or ""

    return _COMPOSE_VAR.sub(repl, value)


def service_environment(service: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """A service's `environment:` as the container gets it, interpolated from `env`."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: interpolate(str(v), env) for k, v in raw.items()}
