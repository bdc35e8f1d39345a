"""The UsageEvent: the single fact about a request that every reader (metrics, budgets,
cost model, request log) takes its numbers from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Attempt:
    """One try at one backend: how it ended and how long it took."""

    backend: str
    model: str
    status: int | None = None
    reason: str | None = None  # why it failed over: status code, connect_error, timeout, ...
    duration_s: float = 0.0
    gpu_seconds: float = 0.0  # self-hosted GPU time this attempt held, failed or not
    cost_usd: float = 0.0  # its GPU time priced, plus the API token cost if it served


@dataclass(slots=True)
class UsageEvent:
    request_id: str  # ours (hg-...): the client's x-request-id unless the upstream sent one
    started_at: float  # unix seconds
    endpoint: str  # chat | completions | embeddings | messages | count_tokens
    tenant: str = "default"
    key_name: str = "anonymous"
    alias: str = "other"  # a configured alias, or "other" (label-safe)
    stream: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    backend: str | None = None  # the backend that served (or last tried)
    model: str | None = None  # upstream model of that backend
    pool: str | None = None
    status: int = 0
    outcome: str = "success"  # success | error | rejected | client_disconnect | cut
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens read from the upstream's prompt cache
    cache_write_tokens: int = 0  # prompt tokens written to it (Anthropic prices these apart)
    reasoning_tokens: int = 0  # among completion_tokens: the model's reasoning, as reported
    estimated: bool = False
    ttft_s: float | None = None
    duration_s: float = 0.0
    overhead_s: float = 0.0
    gpu_seconds: float = 0.0  # all attempts' self-hosted GPU time
    gpu_approximate: bool = False  # GPU time from this replica's own view, not the shared books
    cost_usd: float = 0.0  # all attempts' cost: GPU time of failed attempts is spent too
    counterfactual_usd: float | None = None
    self_hosted: bool = False
    unpriced: bool = False  # served by an API model with no known price: cost unknown, not $0
    upstream_request_id: str | None = None  # the upstream's x-request-id, passed to the client
    kind: str = "live"  # live | batch (a line of a batch job: proxy/batch/)
    batch_tier: bool = False  # served by a provider's Batch API: priced at its batch tier

    @property
    def failovers(self) -> int:
        return max(0, len(self.attempts) - 1)
