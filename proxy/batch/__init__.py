"""Batch jobs: OpenAI's Batch API (files and batches), run on idle self-hosted GPUs first
and at a provider's batch tier otherwise (docs/architecture.md, "Batch jobs")."""
