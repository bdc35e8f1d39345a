"""vLLM's Prometheus metrics, under vLLM's names, labels and bucket bounds.

Rendered by hand (a few lines of text) rather than through prometheus-client:
scraping must stay cheap while the engine is saturated, and the exposition has to
look like vLLM's, `_total` suffixes and `model_name` labels included.
"""

from __future__ import annotations

from bisect import bisect_left

from simulator.engine import EngineLike, Sequence

# fmt: off
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
# fmt: on
PHASES = {
    "queue": "Histogram of time spent in WAITING phase for request.",
    "inference": "Histogram of time spent in RUNNING phase for request.",
    "prefill": "Histogram of time spent in PREFILL phase for request.",
    "decode": "Histogram of time spent in DECODE phase for request.",
}


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # last: +Inf only
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, labels: str) -> list[str]:
        lines = []
        cumulative = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            cumulative += n
            lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {float(cumulative)}')
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {float(self.count)}')
        lines.append(f"{name}_count{{{labels}}} {float(self.count)}")
        lines.append(f"{name}_sum{{{labels}}} {self.sum}")
        return lines


class VllmMetrics:
    """Counters fed by finished sequences; gauges read from the engine at scrape time."""

    def __init__(self, model_name: str, old_names: bool = False) -> None:
        self.old_names = old_names
        self.labels = f'model_name="{model_name}"'
        if not old_names:
            self.labels = f'engine="0",{self.labels}'
        self.e2e = Histogram(E2E_BUCKETS)
        self.ttft = Histogram(TTFT_BUCKETS)
        # vLLM's per-request phase histograms (queue, prefill, decode, inference = both),
        # with the e2e buckets as vLLM uses for them.
        self.phases = {name: Histogram(E2E_BUCKETS) for name in PHASES}
        self.success: dict[str, int] = {}

    def on_finish(self, seq: Sequence) -> None:
        if seq.cancelled:
            reason = "abort"
        else:
            reason = "length" if seq.max_tokens else "stop"
            if seq.finished is not None:
                self.e2e.observe(seq.finished - seq.arrived)
                self._phases(seq, seq.finished)
        self.success[reason] = self.success.get(reason, 0) + 1
        if seq.first_token is not None:
            self.ttft.observe(seq.first_token - seq.arrived)

    def _phases(self, seq: Sequence, finished: float) -> None:
        started = seq.started if seq.started is not None else seq.arrived
        first = seq.first_token if seq.first_token is not None else finished
        self.phases["queue"].observe(started - seq.arrived)
        self.phases["prefill"].observe(first - started)
        self.phases["decode"].observe(finished - first)
        self.phases["inference"].observe(finished - started)

    def render(self, engine: EngineLike, prompt_tokens: int, generation_tokens: int) -> str:
        lb = self.labels
        kv_name = "vllm:gpu_cache_usage_perc" if self.old_names else "vllm:kv_cache_usage_perc"
        out = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{lb}}} {float(engine.num_running)}",
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{lb}}} {float(engine.num_waiting)}",
            f"# HELP {kv_name} KV-cache usage. 1 means 100 percent usage.",
            f"# TYPE {kv_name} gauge",
            f"{kv_name}{{{lb}}} {engine.kv_usage}",
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{lb}}} {float(prompt_tokens)}",
            "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{lb}}} {float(generation_tokens)}",
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
        ]
        for reason in sorted(self.success):
            out.append(
                f'vllm:request_success_total{{{lb},finished_reason="{reason}"}} '
                f"{float(self.success[reason])}"
            )
        out += [
            "# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.",
            "# TYPE vllm:e2e_request_latency_seconds histogram",
            *self.e2e.render("vllm:e2e_request_latency_seconds", lb),
            "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
            "# TYPE vllm:time_to_first_token_seconds histogram",
            *self.ttft.render("vllm:time_to_first_token_seconds", lb),
        ]
        for phase, help_text in PHASES.items():
            name = f"vllm:request_{phase}_time_seconds"
            out += [
                f"# HELP {name} {help_text}",
                f"# TYPE {name} histogram",
                *self.phases[phase].render(name, lb),
            ]
        return "\n".join(out) + "\n"
