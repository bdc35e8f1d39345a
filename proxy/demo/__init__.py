"""`hybridgate demo`: simulated GPU backend and API, the proxy, and a day of traffic."""
