"""Sentry: the API port, its httpx adapter, the fake, and the issue/event models."""
