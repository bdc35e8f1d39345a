"""hybridgate.yaml: the typed model, `${VAR}` expansion, and errors that point at their place.

Config is the interface (docs/architecture.md, "Config"): every problem is reported at
once, each with its path in the file (`models.chat.targets[1].backend: unknown backend
'opnai'`), and `check` and `serve` refuse the same problems.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

# ---------------------------------------------------------------- env expansion

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class MissingEnvVar(ValueError):
    """A `${VAR}` without default whose variable is not set."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"environment variable '{name}' is not set (and has no ${{{name}:-default}})"
        )
        self.name = name


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace `${VAR}` and `${VAR:-default}` in `text` from `env` (default: os.environ)."""
    source = os.environ if env is None else env

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = source.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise MissingEnvVar(name)
            return default
        return value

    return _ENV_RE.sub(repl, text)


def _expand_tree(node: Any, path: str, env: Mapping[str, str] | None, problems: list[str]) -> Any:
    """Expand env references in every string of a parsed YAML tree, collecting misses."""
    if isinstance(node, str):
        try:
            expanded = expand_env(node, env)
        except MissingEnvVar as exc:
            problems.append(f"{path or '<root>'}: {exc}")
            return node
        return (
            _coerce_scalar(expanded) if expanded != node and _ENV_RE.fullmatch(node) else expanded
        )
    if isinstance(node, dict):
        return {k: _expand_tree(v, _join(path, str(k)), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_tree(v, f"{path}[{i}]", env, problems) for i, v in enumerate(node)]
    return node


def _coerce_scalar(text: str) -> Any:
    """A whole-value `${VAR}` takes YAML's scalar typing (`${PORT:-4000}` is an int)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | bool) else text


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------- the model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 4000


class State(_Strict):
    url: str = "memory://"
    flush_interval_s: Annotated[float, Field(gt=0)] = 0.25
    refresh_interval_s: Annotated[float, Field(gt=0)] = 1.0
    timeout_s: Annotated[float, Field(gt=0)] = 1.0  # per round trip to the state backend
    prefix: Annotated[str, Field(min_length=1)] = "hybridgate"  # key prefix in Redis
    # Length of the rpm/tpm window; the limits are per window. Change only for tests.
    rate_window_s: Annotated[float, Field(gt=0)] = 60.0

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not re.match(r"^(memory|redis|rediss|unix)://", url):
            raise ValueError("must be memory:// or redis://host:port/db (also rediss://, unix://)")
        return url


class ApiKey(_Strict):
    key: SecretStr
    tenant: str = "default"
    name: str | None = None
    rpm: Annotated[int, Field(ge=1)] | None = None
    tpm: Annotated[int, Field(ge=1)] | None = None
    # Requests of this key in flight at once (per proxy process); past it, 429.
    max_concurrency: Annotated[int, Field(ge=1)] | None = None


class Auth(_Strict):
    admin_key: SecretStr | None = None
    keys: list[ApiKey] = []


class Tenant(_Strict):
    monthly_api_budget_usd: Annotated[float, Field(ge=0)] | None = None
    over_budget: Literal["self_hosted_only", "reject"] = "self_hosted_only"
    # Requests of all the tenant's keys in flight at once (per proxy process); past it, 429.
    max_concurrency: Annotated[int, Field(ge=1)] | None = None


class Engineering(_Strict):
    setup_hours: Annotated[float, Field(ge=0)] = 0.0
    hourly_rate_usd: Annotated[float, Field(ge=0)] = 0.0
    amortize_months: Annotated[float, Field(gt=0)] = 12.0
    maintenance_hours_per_month: Annotated[float, Field(ge=0)] = 0.0


class GpuPool(_Strict):
    gpus: Annotated[int, Field(ge=1)] = 1
    billing: Literal["rental", "purchase", "serverless"] = "rental"
    usd_per_gpu_hour: Annotated[float, Field(ge=0)] | None = None
    purchase_usd_per_gpu: Annotated[float, Field(ge=0)] | None = None
    amortize_months: Annotated[float, Field(gt=0)] = 36.0
    power_kw_per_gpu: Annotated[float, Field(ge=0)] | None = None
    usd_per_kwh: Annotated[float, Field(ge=0)] | None = None
    hosting_usd_per_month: Annotated[float, Field(ge=0)] | None = None
    serverless_usd_per_gpu_second: Annotated[float, Field(ge=0)] | None = None
    cold_start_seconds: Annotated[float, Field(ge=0)] = 0.0
    capacity_tokens_per_s: Annotated[float, Field(gt=0)] | None = None
    capacity_requests_per_s: Annotated[float, Field(gt=0)] | None = None
    prefill_weight: Annotated[float, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _billing_has_its_price(self) -> GpuPool:
        needed = {
            "rental": "usd_per_gpu_hour",
            "purchase": "purchase_usd_per_gpu",
            "serverless": "serverless_usd_per_gpu_second",
        }[self.billing]
        if getattr(self, needed) is None:
            raise ValueError(f"billing '{self.billing}' needs '{needed}'")
        return self


class Timeouts(_Strict):
    connect_s: Annotated[float, Field(gt=0)] = 5.0
    read_s: Annotated[float, Field(gt=0)] = 600.0


class Backend(_Strict):
    type: Literal["openai", "anthropic", "litellm"] = "openai"
    base_url: str | None = None
    api_key: SecretStr | None = None
    provider: str | None = None
    pool: str | None = None
    engine: Literal["vllm", "llamacpp", "none"] | None = None
    max_concurrency: Annotated[int, Field(ge=1)] = 256
    timeouts: Timeouts = Timeouts()
    headers: dict[str, str] = {}
    health_path: str | None = None
    metrics_url: str | None = None
    context_window: Annotated[int, Field(ge=1)] | None = None
    breaker: Breaker | None = None  # overrides the top-level `breaker:` for this backend
    # The API families it serves natively (docs/dialects.md); default by type: openai and
    # litellm → [openai], anthropic → [anthropic]. vLLM and llama.cpp also serve
    # /v1/messages: `speaks: [openai, anthropic]` sends Anthropic clients there untranslated.
    # `responses` (OpenAI's /v1/responses): OpenAI's own API (base_url on api.openai.com)
    # speaks it by default; any other server only when listed (vLLM serves it; llama.cpp
    # and most OpenAI-compatible providers do not: they get it translated to chat).
    speaks: list[Literal["openai", "anthropic", "responses"]] | None = None
    # Whether a backend that speaks `responses` keeps its answers itself, so a later turn
    # may name one by `previous_response_id` (and GET/DELETE ask it). Default: yes, but
    # not a vLLM or llama.cpp engine (vLLM stores none unless started with
    # VLLM_ENABLE_RESPONSES_API_STORE=1): the proxy then keeps them and spells the
    # conversation out as input.
    stores_responses: bool | None = None
    # type: anthropic only: the `anthropic-version` header (a client's own is passed
    # instead), `max_tokens` when an OpenAI client gave none (Anthropic requires it), and
    # what becomes of thinking blocks in answers to OpenAI clients.
    anthropic_version: str = "2023-06-01"
    default_max_tokens: Annotated[int, Field(ge=1)] = 4096
    thinking: Literal["drop", "pass"] = "drop"
    batch: bool = False  # serves OpenAI's Batch API (files + batches): a batch provider

    @model_validator(mode="before")
    @classmethod
    def _anthropic_default_url(cls, data: Any) -> Any:
        """`type: anthropic` without a base_url is Anthropic's own API."""
        if isinstance(data, dict) and data.get("type") == "anthropic" and not data.get("base_url"):
            return {**data, "base_url": "https://api.anthropic.com"}
        return data

    @model_validator(mode="after")
    def _type_has_its_fields(self) -> Backend:
        if self.type == "openai" and not self.base_url:
            raise ValueError("type 'openai' needs 'base_url'")
        if self.speaks is not None and not self.speaks:
            raise ValueError("'speaks' needs at least one of openai, anthropic, responses")
        if self.speaks is not None and self.type == "litellm" and self.speaks != ["openai"]:
            raise ValueError("type 'litellm' speaks openai only")
        if self.type == "litellm" and not self.provider:
            raise ValueError("type 'litellm' needs 'provider' (e.g. anthropic)")
        if self.base_url and not re.match(r"^https?://", self.base_url):
            raise ValueError(
                f"base_url must start with http:// or https:// (got '{self.base_url}')"
            )
        return self

    @property
    def self_hosted(self) -> bool:
        """A backend with a GPU pool is ours; without one it is a pay-per-token API."""
        return self.pool is not None

    @property
    def families(self) -> frozenset[str]:
        """The API families this backend serves natively (`speaks`, or its type's)."""
        if self.speaks is not None:
            return frozenset(self.speaks)
        if self.type == "anthropic":
            return frozenset({"anthropic"})
        if self.type == "openai" and _is_openai_api(self.base_url):  # serves /v1/responses
            return frozenset({"openai", "responses"})
        return frozenset({"openai"})

    @property
    def engine_kind(self) -> str:
        if self.engine is not None:
            return self.engine
        return "vllm" if self.pool is not None else "none"

    @property
    def keeps_responses(self) -> bool:
        """Its native /v1/responses answers can be continued and fetched upstream."""
        if self.stores_responses is not None:
            return self.stores_responses
        return self.engine_kind not in ("vllm", "llamacpp")


def _is_openai_api(base_url: str | None) -> bool:
    host = urlsplit(base_url or "").hostname or ""
    return host == "api.openai.com"


class Target(_Strict):
    backend: str
    model: str
    weight: Annotated[float, Field(gt=0)] = 1.0
    context_window: Annotated[int, Field(ge=1)] | None = None
    # An OpenAI client's request to an Anthropic target with no max_tokens gets this
    # (else the backend's default_max_tokens): Anthropic requires one.
    default_max_tokens: Annotated[int, Field(ge=1)] | None = None


class Spillover(_Strict):
    max_inflight: Annotated[int, Field(ge=1)] | None = None
    max_waiting: Annotated[int, Field(ge=0)] | None = None
    max_kv_cache: Annotated[float, Field(ge=0, le=1)] | None = None


class CompareTo(_Strict):
    backend: str | None = None
    model: str


Strategy = Literal["priority", "spillover", "cheapest", "weighted", "least_busy", "lowest_latency"]


class ModelAlias(_Strict):
    strategy: Strategy = "priority"
    targets: Annotated[list[Target], Field(min_length=1)]
    spillover: Spillover = Spillover()
    compare_to: CompareTo | None = None
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    stream_timeout_s: Annotated[float, Field(gt=0)] | None = None


class RuleWhen(_Strict):
    tenant: str | list[str] | None = None
    header: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    min_prompt_tokens: Annotated[int, Field(ge=0)] | None = None
    max_prompt_tokens: Annotated[int, Field(ge=0)] | None = None


class Rule(_Strict):
    name: str | None = None
    when: RuleWhen = RuleWhen()
    only: Literal["self_hosted", "api"] | None = None
    prefer: Literal["self_hosted", "api"] | None = None
    route_to: str | None = None


class Price(_Strict):
    """USD per 1M tokens (the unit price pages use); costing/ converts to per token."""

    input: Annotated[float, Field(ge=0)]
    output: Annotated[float, Field(ge=0)]
    cached_input: Annotated[float, Field(ge=0)] | None = None
    cache_write_input: Annotated[float, Field(ge=0)] | None = None
    batch_input: Annotated[float, Field(ge=0)] | None = None
    batch_output: Annotated[float, Field(ge=0)] | None = None


class Limits(_Strict):
    max_body_bytes: Annotated[int, Field(ge=1)] = 10 * 1024 * 1024
    request_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    # A relayed stream ends (with an error event) this long after the request arrived.
    stream_timeout_s: Annotated[float, Field(gt=0)] = 3600.0
    # Slow clients: headers must arrive within this of the connection/request start, the
    # body within body_timeout_s of the headers (slowloris protection).
    header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    body_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # An idle keep-alive connection (answered, no next request begun) is closed after this.
    keep_alive_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # What one upstream answer may hold (proxy/backends/h1client.py): its head (status line,
    # headers, and anything else between body bytes: chunk framing, trailers, 1xx answers),
    # its header count, its body (decoded, if gzip/deflate), and one SSE event of a stream.
    upstream_max_head_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    upstream_max_headers: Annotated[int, Field(ge=8)] = 100
    upstream_max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    upstream_max_event_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    # A request head (request line and header fields) is bounded as it arrives: over
    # these, a 414 (URL) or 431 and the connection closed (proxy/server/protocol.py).
    max_url_bytes: Annotated[int, Field(ge=64)] = 8 * 1024
    max_header_count: Annotated[int, Field(ge=8)] = 100
    max_head_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024


class Breaker(_Strict):
    failure_threshold: Annotated[int, Field(ge=1)] = 5
    cooldown_s: Annotated[float, Field(gt=0)] = 30.0
    failure_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    window_s: Annotated[float, Field(gt=0)] = 60.0
    min_requests: Annotated[int, Field(ge=1)] = 20


class HealthChecks(_Strict):
    enabled: bool = True
    interval_s: Annotated[float, Field(gt=0)] = 10.0
    timeout_s: Annotated[float, Field(gt=0)] = 2.0
    failure_threshold: Annotated[int, Field(ge=1)] = 2
    success_threshold: Annotated[int, Field(ge=1)] = 1


class HealthEndpoint(_Strict):
    # /health/ready's details (aliases, backends, breakers, upstream models) for callers
    # without the admin key; by default they get the status only.
    public_details: bool = False


class EngineMetrics(_Strict):
    enabled: bool = True
    interval_s: Annotated[float, Field(gt=0)] = 5.0
    timeout_s: Annotated[float, Field(gt=0)] = 2.0


class Costing(_Strict):
    hours_per_month: Annotated[float, Field(gt=0)] = 730.0


class MetricsAccess(_Strict):
    token: SecretStr | None = None
    allow_networks: list[str] = []

    @model_validator(mode="after")
    def _networks_parse(self) -> MetricsAccess:
        import ipaddress

        for net in self.allow_networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                msg = f"allow_networks: '{net}' is not a network (e.g. 10.0.0.0/8)"
                raise ValueError(msg) from None
        return self


class RequestLogConfig(_Strict):
    path: str | None = None


class Responses(_Strict):
    """OpenAI's /v1/responses: how long the proxy keeps a stored response (docs/state.md)."""

    retention_s: Annotated[float, Field(gt=0)] = 30 * 24 * 3600.0  # OpenAI keeps 30 days


class BatchPolicy(_Strict):
    """How the lines of one alias run (docs/config.md, "Batch jobs")."""

    mode: Literal["auto", "self_hosted", "provider"] = "auto"
    utilization_threshold: Annotated[float, Field(gt=0, le=1)] = 0.8
    max_inflight: Annotated[int, Field(ge=1)] = 4
    provider: str | None = None  # a backend with `batch: true`, an API target of the alias
    forward_after_stall_s: Annotated[float, Field(gt=0)] = 600.0
    forward_at_window_fraction: Annotated[float, Field(ge=0, le=1)] = 0.75


class BatchConfig(_Strict):
    dir: str = "./hybridgate-batch"
    max_file_bytes: Annotated[int, Field(ge=1)] = 200 * 1024 * 1024
    max_lines: Annotated[int, Field(ge=1)] = 50_000
    window_s: Annotated[float, Field(gt=0)] = 86400.0  # how long "24h" lasts (tests shrink it)
    poll_interval_s: Annotated[float, Field(gt=0)] = 30.0
    interrupted: Literal["error", "rerun"] = "error"
    aliases: dict[str, BatchPolicy] = {}


class Config(_Strict):
    listen: Listen = Listen()
    state: State = State()
    auth: Auth = Auth()
    tenants: dict[str, Tenant] = {}
    engineering: Engineering = Engineering()
    gpu_pools: dict[str, GpuPool] = {}
    backends: Annotated[dict[str, Backend], Field(min_length=1)]
    models: Annotated[dict[str, ModelAlias], Field(min_length=1)]
    rules: list[Rule] = []
    prices: dict[str, Price] = {}
    limits: Limits = Limits()
    breaker: Breaker = Breaker()
    health_checks: HealthChecks = HealthChecks()
    health: HealthEndpoint = HealthEndpoint()
    engine_metrics: EngineMetrics = EngineMetrics()
    costing: Costing = Costing()
    metrics: MetricsAccess = MetricsAccess()
    request_log: RequestLogConfig = RequestLogConfig()
    responses: Responses = Responses()
    batch: BatchConfig = BatchConfig()

    def backend_of(self, target: Target) -> Backend:
        return self.backends[target.backend]


# ---------------------------------------------------------------- loading


class ConfigError(Exception):
    """Every problem of a config, each `path: message`."""

    def __init__(self, problems: Iterable[str], source: str = "<config>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(
            f"{source}: {len(self.problems)} problem(s)\n"
            + "\n".join(f"  {p}" for p in self.problems)
        )


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = _join(out, str(part))
    return out or "<root>"


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in ("function-after",))
        # Union members show up as loc parts like 'str' / 'list[str]'; keep the user's path.
        loc = tuple(
            p
            for p in loc
            if not (
                isinstance(p, str)
                and (
                    "[" in p or p in {"str", "int", "float", "constrained-int", "constrained-float"}
                )
            )
        )
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(f"{_loc_to_path(loc)}: {msg}")
    return sorted(set(problems), key=problems.index)


def _section(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A mapping of the raw config, or {} when it is missing or not one."""
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _entries(raw: Mapping[str, Any], key: str) -> list[Any]:
    """A list of the raw config, or [] when it is missing or not one."""
    value = raw.get(key)
    return value if isinstance(value, list) else []


def _reference_problems(raw: Mapping[str, Any]) -> list[str]:
    """Cross-references pydantic cannot see: backends, pools and aliases named elsewhere."""
    problems: list[str] = []
    backends = _section(raw, "backends")
    pools = _section(raw, "gpu_pools")
    models = _section(raw, "models")
    for name, backend in backends.items():
        if (
            isinstance(backend, dict)
            and backend.get("pool") is not None
            and backend["pool"] not in pools
        ):
            problems.append(
                f"backends.{name}.pool: unknown gpu pool '{backend['pool']}'{_known(pools)}"
            )
    for alias, spec in models.items():
        if not isinstance(spec, dict):
            continue
        targets = spec.get("targets")
        if isinstance(targets, list):
            for i, target in enumerate(targets):
                if (
                    isinstance(target, dict)
                    and isinstance(target.get("backend"), str)
                    and target["backend"] not in backends
                ):
                    problems.append(
                        f"models.{alias}.targets[{i}].backend: unknown backend "
                        f"'{target['backend']}'{_known(backends)}"
                    )
        compare = spec.get("compare_to")
        if (
            isinstance(compare, dict)
            and isinstance(compare.get("backend"), str)
            and compare["backend"] not in backends
        ):
            problems.append(
                f"models.{alias}.compare_to.backend: unknown backend "
                f"'{compare['backend']}'{_known(backends)}"
            )
        if spec.get("strategy") == "spillover" and isinstance(targets, list) and targets:
            first = targets[0] if isinstance(targets[0], dict) else {}
            first_backend = first.get("backend")
            b = backends.get(first_backend) if isinstance(first_backend, str) else None
            if isinstance(b, dict) and b.get("pool") is None:
                problems.append(
                    f"models.{alias}.targets[0]: strategy 'spillover' needs a "
                    f"self-hosted first target (a backend with 'pool:')"
                )
    rules = _entries(raw, "rules")
    for i, rule in enumerate(rules):
        if (
            isinstance(rule, dict)
            and isinstance(rule.get("route_to"), str)
            and rule["route_to"] not in models
        ):
            problems.append(
                f"rules[{i}].route_to: unknown model alias '{rule['route_to']}'{_known(models)}"
            )
    auth = _section(raw, "auth")
    tenants = _section(raw, "tenants")
    keys = _entries(auth, "keys")
    seen: dict[str, int] = {}
    for i, entry in enumerate(keys):
        if not isinstance(entry, dict):
            continue
        key = entry.get("key")
        if isinstance(key, str):
            if key in seen:
                problems.append(f"auth.keys[{i}].key: same key as auth.keys[{seen[key]}]")
            seen[key] = i
        tenant = entry.get("tenant")
        if tenants and isinstance(tenant, str) and tenant not in tenants and tenant != "default":
            problems.append(f"auth.keys[{i}].tenant: unknown tenant '{tenant}'{_known(tenants)}")
    return problems


def _batch_problems(raw: Mapping[str, Any]) -> list[str]:
    """`batch.aliases`: known aliases; a provider is a `batch: true` openai backend the
    alias already targets (its model and price are the target's)."""
    problems: list[str] = []
    backends = _section(raw, "backends")
    models = _section(raw, "models")
    for alias, policy in _section(_section(raw, "batch"), "aliases").items():
        where = f"batch.aliases.{alias}"
        if alias not in models:
            problems.append(f"{where}: unknown model alias '{alias}'{_known(models)}")
            continue
        provider = policy.get("provider") if isinstance(policy, dict) else None
        if not isinstance(provider, str):
            if isinstance(policy, dict) and policy.get("mode") == "provider":
                problems.append(f"{where}.mode: 'provider' needs 'provider: <backend>'")
            continue
        b = backends.get(provider)
        if not isinstance(b, dict):
            problems.append(f"{where}.provider: unknown backend '{provider}'{_known(backends)}")
        elif b.get("batch") is not True or b.get("type", "openai") != "openai":
            problems.append(
                f"{where}.provider: backend '{provider}' needs type openai, batch: true"
            )
        else:
            spec = models[alias] if isinstance(models[alias], dict) else {}
            targets = spec.get("targets")
            if not isinstance(targets, list) or not any(
                isinstance(t, dict) and t.get("backend") == provider for t in targets
            ):
                problems.append(f"{where}.provider: '{provider}' is not a target of '{alias}'")
    return problems


def _known(names: Mapping[str, Any]) -> str:
    return f" (known: {', '.join(sorted(map(str, names)))})" if names else " (none defined)"


def parse_config(
    text: str, source: str = "<config>", env: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate config text; raise ConfigError listing every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError([f"<yaml> {where}: {getattr(exc, 'problem', exc)}"], source) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["<root>: the config must be a mapping of sections"], source)
    problems: list[str] = []
    raw = _expand_tree(raw, "", env, problems)
    config: Config | None = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
    problems.extend(_reference_problems(raw))
    problems.extend(_batch_problems(raw))
    if problems or config is None:
        raise ConfigError(problems, source)
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file (see parse_config)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError([f"<file>: cannot read {p}: {exc.strerror}"], str(p)) from None
    return parse_config(text, str(p), env)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warnings_for(config: Config) -> list[str]:
    """Things that are valid but probably not what the operator wants (`check` prints them)."""
    from urllib.parse import urlsplit

    out = []
    exposed = not _is_loopback(config.listen.host)
    if not config.auth.keys:
        where = f" on {config.listen.host}, reachable from the network" if exposed else ""
        out.append(
            f"auth.keys: none configured: the proxy is open to anyone who can reach it{where}"
        )
    if config.auth.admin_key is None:
        out.append("auth.admin_key: not set: /costs/report, /dashboard and /admin are disabled")
    state = urlsplit(config.state.url)
    if (
        state.scheme in ("redis", "rediss")
        and not state.password
        and not _is_loopback(state.hostname or "")
    ):
        out.append(
            f"state.url: Redis on {state.hostname} without a password: anyone on that "
            f"network can read and change spend and budgets"
        )
    if exposed and not (config.metrics.token or config.metrics.allow_networks):
        out.append(
            "metrics: /metrics is open on a non-loopback address (spend per tenant); "
            "set metrics.token or metrics.allow_networks"
        )
    for i, rule in enumerate(config.rules):
        if rule.only != "self_hosted":
            continue
        aliases = [rule.route_to] if rule.route_to else list(config.models)
        for alias in aliases:
            spec = config.models.get(alias)
            if spec is None:
                continue
            if not any(config.backends[t.backend].pool for t in spec.targets):
                out.append(
                    f"rules[{i}]: 'only: self_hosted' can never be met for model "
                    f"'{alias}' (no self-hosted target): matching requests get 503"
                )
    return out
