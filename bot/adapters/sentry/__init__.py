"""The Sentry port over HTTP (httpx): transport, response validation, operations."""
