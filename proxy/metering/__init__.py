"""Metering: one UsageEvent per request, GPU-seconds under batching, cost, and the sinks."""
