"""The ASGI application: a thin, explicit routing table over plain async functions.

Each sibling module contributes its routes (``routes(parts) -> list[Route]``);
``create_app`` concatenates them. Adding a surface (Slack interactivity, the web
console) is one more module and one more line here.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from bot.interfaces.http import approval_wiring, health, metrics, sentry_hooks
from bot.interfaces.http.parts import HttpParts


def create_app(parts: HttpParts) -> Starlette:
    """The app serving ``parts``: health, metrics, the Sentry webhook, Slack's
    Approve / Deny buttons and (with ``BOT_CONSOLE_TOKEN``) the web console."""
    routes: list[BaseRoute] = [
        *health.routes(parts),
        *metrics.routes(parts),
        *sentry_hooks.routes(parts),
        *approval_wiring.routes(parts),
    ]
    app = Starlette(routes=routes)
    app.state.parts = parts
    return app
