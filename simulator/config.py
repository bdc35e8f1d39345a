"""Every knob of the simulator, and the command-line flags that set them.

One dataclass is the single source of truth: `python -m simulator` and
`hybridgate sim` share `add_arguments` so their flags can never drift apart.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["vllm", "api", "anthropic"]


@dataclass
class SimConfig:
    mode: Mode = "vllm"
    host: str = "127.0.0.1"
    port: int = 8000
    # A second listener serving the same app that `refuse_connections` never closes,
    # so a test can still reach /sim/* while the main port is dark.
    control_port: int | None = None
    models: list[str] = field(default_factory=list)
    max_model_len: int = 8192
    default_max_tokens: int = 16
    seed: int = 0
    # Divides every latency (engine steps, api-mode ttft/itl) so tests run fast.
    speed: float = 1.0
    tool_calls: Literal["auto", "always", "never"] = "auto"
    flat_errors: bool = False
    old_metrics: bool = False
    prompt_tokens_details: bool = False
    embedding_dim: int = 32
    require_key: str | None = None
    max_logged_requests: int = 100_000
    access_log: bool = False
    # Keep each inference request's messages (chat) or input items (responses) in
    # /sim/stats, so a test can see what an upstream was sent.
    record_bodies: bool = False
    # vLLM engine model (milliseconds); defaults are roughly an 8B model on one H100.
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    kv_cache_tokens: int = 400_000
    step_overhead_ms: float = 12.0
    prefill_overhead_ms: float = 18.0
    prefill_ms_per_token: float = 0.25
    decode_ms_per_seq: float = 0.15
    # api mode: fixed latency per request, no shared engine.
    ttft_ms: float = 250.0
    itl_ms: float = 10.0
    rpm_limit: int | None = None
    # api mode's Batch API: a batch stays in progress this long (before --speed).
    batch_seconds: float = 5.0
    batch_concurrency: int = 8
    # anthropic mode: prompt tokens reported as read from / written to the prompt cache.
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    # api mode's /v1/responses: output tokens reported as reasoning (among output_tokens).
    reasoning_tokens: int = 0
    # Faults at start (same keys as POST /sim/faults).
    faults: dict[str, object] = field(default_factory=dict)

    @property
    def served_models(self) -> list[str]:
        """vLLM always has a served name; api and anthropic modes with no --model accept any."""
        if self.models:
            return self.models
        return ["sim-model"] if self.mode == "vllm" else []


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SimConfig()
    p.add_argument("--mode", choices=["vllm", "api", "anthropic"], default=d.mode)
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port, help="0 picks a free port")
    p.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="extra listener for /sim/* that stays up under --refuse-connections",
    )
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        help="served model name (repeatable); vllm default sim-model, "
        "api default: accept any model",
    )
    p.add_argument("--max-model-len", type=int, default=d.max_model_len)
    p.add_argument(
        "--default-max-tokens",
        type=int,
        default=d.default_max_tokens,
        help="completion length when the request gives no max_tokens",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed for probabilistic faults")
    p.add_argument(
        "--speed", type=float, default=d.speed, help="divide all latencies by this factor"
    )
    p.add_argument("--tool-calls", choices=["auto", "always", "never"], default=d.tool_calls)
    p.add_argument(
        "--flat-errors",
        action="store_true",
        help="vllm: old flat error body {object: error, message, type, param, code}",
    )
    p.add_argument(
        "--old-metrics",
        action="store_true",
        help="vllm: emit vllm:gpu_cache_usage_perc (not kv_cache_usage_perc), no engine label",
    )
    p.add_argument(
        "--prompt-tokens-details",
        action="store_true",
        help="vllm: report usage.prompt_tokens_details.cached_tokens",
    )
    p.add_argument("--embedding-dim", type=int, default=d.embedding_dim)
    p.add_argument("--require-key", default=None, help="401 unless Authorization: Bearer KEY")
    p.add_argument(
        "--max-logged-requests",
        type=int,
        default=d.max_logged_requests,
        help="per-request records kept for /sim/stats",
    )
    p.add_argument("--access-log", action="store_true")
    p.add_argument(
        "--record-bodies",
        action="store_true",
        help="keep each request's messages / input items in /sim/stats (tests)",
    )

    g = p.add_argument_group("vllm engine (milliseconds, before --speed)")
    g.add_argument("--max-num-seqs", type=int, default=d.max_num_seqs)
    g.add_argument("--max-num-batched-tokens", type=int, default=d.max_num_batched_tokens)
    g.add_argument("--kv-cache-tokens", type=int, default=d.kv_cache_tokens)
    g.add_argument("--step-overhead-ms", type=float, default=d.step_overhead_ms)
    g.add_argument("--prefill-overhead-ms", type=float, default=d.prefill_overhead_ms)
    g.add_argument("--prefill-ms-per-token", type=float, default=d.prefill_ms_per_token)
    g.add_argument("--decode-ms-per-seq", type=float, default=d.decode_ms_per_seq)

    a = p.add_argument_group("api mode")
    a.add_argument("--ttft-ms", type=float, default=d.ttft_ms)
    a.add_argument(
        "--reasoning-tokens",
        type=int,
        default=d.reasoning_tokens,
        help="/v1/responses: report this many output tokens as reasoning tokens",
    )
    a.add_argument("--itl-ms", type=float, default=d.itl_ms)
    a.add_argument(
        "--rpm-limit",
        type=int,
        default=None,
        help="enforce N requests/minute with 429 (headers are always sent)",
    )
    a.add_argument(
        "--batch-seconds",
        type=float,
        default=d.batch_seconds,
        help="Batch API: a batch completes no sooner than this (divided by --speed)",
    )
    a.add_argument("--batch-concurrency", type=int, default=d.batch_concurrency)

    an = p.add_argument_group("anthropic mode (POST /v1/messages)")
    an.add_argument(
        "--cache-read-tokens",
        type=int,
        default=d.cache_read_tokens,
        help="report this many prompt tokens (capped by the prompt) as cache_read_input_tokens",
    )
    an.add_argument(
        "--cache-creation-tokens",
        type=int,
        default=d.cache_creation_tokens,
        help="report this many prompt tokens as cache_creation_input_tokens",
    )

    f = p.add_argument_group("faults at start (also POST /sim/faults)")
    f.add_argument("--fault-status", type=int, default=None)
    f.add_argument("--fault-probability", type=float, default=None)
    f.add_argument("--fault-count", type=int, default=None)
    f.add_argument("--fault-retry-after", type=float, default=None)
    f.add_argument("--fault-type", default=None)
    f.add_argument("--fault-code", default=None)
    f.add_argument("--fault-message", default=None)
    f.add_argument(
        "--fault-shape", choices=["vllm", "vllm_flat", "openai", "anthropic"], default=None
    )
    f.add_argument("--slow-first-token-s", type=float, default=None)
    f.add_argument("--cut-stream-after", type=int, default=None)
    f.add_argument("--health-503", action="store_true")
    f.add_argument("--refuse-connections", action="store_true")
    f.add_argument(
        "--refuse-for-s",
        type=float,
        default=None,
        help="with --refuse-connections: start listening after this long",
    )


_FAULT_FLAGS = {
    "fault_status": "status",
    "fault_probability": "probability",
    "fault_count": "count",
    "fault_retry_after": "retry_after",
    "fault_type": "error_type",
    "fault_code": "error_code",
    "fault_message": "error_message",
    "fault_shape": "error_shape",
    "slow_first_token_s": "slow_first_token_s",
    "cut_stream_after": "cut_stream_after",
    "refuse_for_s": "refuse_for_s",
}


def from_args(ns: argparse.Namespace) -> SimConfig:
    faults: dict[str, object] = {}
    for flag, key in _FAULT_FLAGS.items():
        value = getattr(ns, flag)
        if value is not None:
            faults[key] = value
    if ns.health_503:
        faults["health_503"] = True
    if ns.refuse_connections:
        faults["refuse_connections"] = True
    if isinstance(faults.get("error_code"), str) and str(faults["error_code"]).isdigit():
        faults["error_code"] = int(str(faults["error_code"]))
    return SimConfig(
        mode=ns.mode,
        host=ns.host,
        port=ns.port,
        control_port=ns.control_port,
        models=list(ns.models),
        max_model_len=ns.max_model_len,
        default_max_tokens=ns.default_max_tokens,
        seed=ns.seed,
        speed=ns.speed,
        tool_calls=ns.tool_calls,
        flat_errors=ns.flat_errors,
        old_metrics=ns.old_metrics,
        prompt_tokens_details=ns.prompt_tokens_details,
        embedding_dim=ns.embedding_dim,
        require_key=ns.require_key,
        max_logged_requests=ns.max_logged_requests,
        access_log=ns.access_log,
        record_bodies=ns.record_bodies,
        reasoning_tokens=ns.reasoning_tokens,
        max_num_seqs=ns.max_num_seqs,
        max_num_batched_tokens=ns.max_num_batched_tokens,
        kv_cache_tokens=ns.kv_cache_tokens,
        step_overhead_ms=ns.step_overhead_ms,
        prefill_overhead_ms=ns.prefill_overhead_ms,
        prefill_ms_per_token=ns.prefill_ms_per_token,
        decode_ms_per_seq=ns.decode_ms_per_seq,
        ttft_ms=ns.ttft_ms,
        itl_ms=ns.itl_ms,
        rpm_limit=ns.rpm_limit,
        batch_seconds=ns.batch_seconds,
        batch_concurrency=ns.batch_concurrency,
        cache_read_tokens=ns.cache_read_tokens,
        cache_creation_tokens=ns.cache_creation_tokens,
        faults=faults,
    )
