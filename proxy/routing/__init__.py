"""Where a request may go: the router's plans, rules, and what is live about each backend
(breakers, health probes, engine metrics)."""
