"""One request on the OpenAI routes: auth, admission, attempts, failover, relay, errors
(docs/architecture.md, "The request path")."""
