"""``sentry-bot serve``: the ASGI app (Starlette) and the process that runs it."""
