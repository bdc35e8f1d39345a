"""Live cost: the windowed traffic model, the live report, its gauges, routes and dashboard."""

from proxy.live.routes import register_routes
from proxy.live.service import LiveCosts

__all__ = ["LiveCosts", "register_routes"]
