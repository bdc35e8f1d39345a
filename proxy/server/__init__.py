"""Serving HTTP: uvicorn with our protocol, the OpenAI routes' fast path, the app and its
operator surface (docs/architecture.md, "Modules")."""
