"""Sentry, the domain side: the port (``port``), the issue/event models, rate-limit
timing and webhook envelopes. The httpx adapter is :mod:`bot.adapters.sentry`, the fake
:mod:`bot.testing.sentry`."""
