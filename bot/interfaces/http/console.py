"""The web console: server-rendered pages (Jinja2, autoescape on, no JavaScript at all).

Pages: tracked issues with filters (state, team, severity, playbook); one issue (fields,
triage indicators, runs with preview rows and before-image, approvals, fix links,
timeline, the post-incident report); pending approvals with Approve / Deny; the global
pause switch with its reason; outbox dead letters.

Every page needs a principal (:mod:`bot.interfaces.http.console_auth`): without one the
answer is 401 with the login form and no data. Every state-changing form is a POST with
a CSRF token. Approving here goes through the same :class:`ApprovalService` as Slack
(``BOT_APPROVERS``, compare-and-set, journal), with the user name given at login as the
approver. Responses carry a Content-Security-Policy that allows no script at all, so
even a template bug could not run event text as code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, quote

from jinja2 import Environment, FileSystemLoader
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bot.clock import Clock, ensure_utc
from bot.interfaces.http import console_data as data
from bot.interfaces.http.console_auth import COOKIE, SESSION_TTL, ConsoleAuth, Principal
from bot.interfaces.http.console_auth import valid_user_name as _valid_user
from bot.pipeline.approvals import Action, ApprovalOutcome, ApprovalService, Channel
from bot.pipeline.guards import set_paused
from bot.store.db import Store
from bot.store.models import OutboxMessage

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 16 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Handler = Callable[[Request, Principal], Awaitable[Response]]


def _when(value: datetime | None) -> str:
    return ensure_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _safe_link(url: str | None) -> bool:
    """Only absolute http(s) links become ``href`` (no ``javascript:``, no ``data:``)."""
    return bool(url) and str(url).lower().startswith(("https://", "http://"))


def make_environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True)
    env.globals.update(when=_when, safe_link=_safe_link, filters=data.FILTERS)
    return env


@dataclass
class Console:
    """The console's routes over one store. ``run_approved`` executes an approved run
    (the leader's executor; see the app factory)."""

    store: Store
    clock: Clock
    auth: ConsoleAuth
    approvals: ApprovalService
    run_approved: Callable[[str], None]
    quiet_hours: float = 48
    env: Environment | None = None

    def __post_init__(self) -> None:
        self.env = self.env or make_environment()

    def routes(self) -> list[Route]:
        return [
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self._guard(self.logout), methods=["POST"]),
            Route("/", self._guard(self.issues), methods=["GET"]),
            Route("/issues/{key}", self._guard(self.issue), methods=["GET"]),
            Route("/approvals", self._guard(self.pending), methods=["GET"]),
            Route("/approvals/{run_id}", self._guard(self.decide), methods=["POST"]),
            Route("/pause", self._guard(self.pause_page), methods=["GET"]),
            Route("/pause", self._guard(self.pause), methods=["POST"]),
            Route("/outbox", self._guard(self.outbox), methods=["GET"]),
        ]

    # --- plumbing -------------------------------------------------------------------

    def _render(
        self, name: str, status: int = 200, principal: Principal | None = None, **ctx: object
    ) -> HTMLResponse:
        assert self.env is not None
        html = self.env.get_template(name).render(
            user=principal.user if principal else None,
            csrf=self.auth.csrf(principal) if principal else "",
            **ctx,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def principal(self, request: Request) -> Principal | None:
        return self.auth.bearer(request.headers.get("authorization")) or self.auth.session(
            request.cookies.get(COOKIE)
        )

    def _guard(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            principal = self.principal(request)
            if principal is None:
                # No data, just the way in.
                return self._render("login.html", status=401)
            if request.method == "POST":
                form = await _form(request)
                if form is None:
                    return self._render("error.html", 413, principal, title="Too large")
                if not self.auth.csrf_ok(principal, form.get("csrf")):
                    return self._render(
                        "error.html",
                        403,
                        principal,
                        title="Refused",
                        message="The form's CSRF token is missing or wrong; nothing changed.",
                    )
                request.state.form = form
            return await handler(request, principal)

        return guarded

    def _redirect(self, path: str, flash: str = "") -> Response:
        # The message is signed: a crafted link cannot make the console "say" anything.
        flash = flash[:300]
        target = f"{path}?flash={quote(flash)}&f={self.auth.sign(flash)}" if flash else path
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)

    def _flash(self, request: Request) -> str:
        flash = request.query_params.get("flash", "")[:300]
        return flash if self.auth.signed(flash, request.query_params.get("f", "")) else ""

    # --- login ----------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self._render("login.html")

    async def login(self, request: Request) -> Response:
        form = await _form(request) or {}
        user, token = form.get("user", "").strip(), form.get("token", "")
        if not _valid_user(user) or not self.auth.token_ok(token):
            return self._render(
                "login.html",
                401,
                error="Wrong token, or a user name that is not letters, digits and ._@-",
            )
        response = self._redirect("/")
        response.set_cookie(
            COOKIE,
            self.auth.issue(user),
            max_age=int(SESSION_TTL.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        log.info("console: %s signed in", user)
        return response

    async def logout(self, request: Request, principal: Principal) -> Response:
        response = self._redirect("/login")
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # --- pages ----------------------------------------------------------------------

    async def issues(self, request: Request, principal: Principal) -> Response:
        chosen = {
            name: request.query_params.get(name, "")[:128]
            for name in data.FILTERS
            if request.query_params.get(name)
        }

        def read() -> data.IssueList:
            with self.store.session() as session:
                return data.list_issues(session, chosen)

        listing = await run_in_threadpool(read)
        return self._render(
            "issues.html", principal=principal, data=listing, flash=self._flash(request)
        )

    async def issue(self, request: Request, principal: Principal) -> Response:
        key = request.path_params["key"][:128]

        def read() -> data.IssueDetail | None:
            with self.store.session() as session:
                return data.issue_detail(session, key, quiet_hours=self.quiet_hours)

        detail = await run_in_threadpool(read)
        if detail is None:
            return self._render(
                "error.html", 404, principal, title="Not found", message="No such tracked issue."
            )
        return self._render("issue.html", principal=principal, d=detail, flash=self._flash(request))

    async def pending(self, request: Request, principal: Principal) -> Response:
        def read() -> list[data.Pending]:
            with self.store.session() as session:
                return data.pending_approvals(session)

        pending = await run_in_threadpool(read)
        return self._render(
            "approvals.html", principal=principal, pending=pending, flash=self._flash(request)
        )

    async def decide(self, request: Request, principal: Principal) -> Response:
        form: dict[str, str] = request.state.form
        run_id = request.path_params["run_id"][:64]
        action = form.get("action", "")
        if action not in (Action.APPROVE.value, Action.DENY.value):
            return self._redirect("/approvals", "choose approve or deny")
        result = await run_in_threadpool(
            self.approvals.decide, run_id, Action(action), principal.user, Channel.CONSOLE
        )
        flash = result.message
        if result.outcome is ApprovalOutcome.APPROVED:
            await run_in_threadpool(self.run_approved, run_id)
            flash += "; executed (see the run below)"
        target = f"/issues/{quote(result.issue_id, safe='')}" if result.issue_id else "/approvals"
        return self._redirect(target, flash)

    async def pause_page(self, request: Request, principal: Principal) -> Response:
        def read() -> tuple[str | None, datetime | None]:
            with self.store.session() as session:
                reason, row = data.pause_state(session)
                return reason, row.updated_at if row is not None else None

        reason, since = await run_in_threadpool(read)
        return self._render(
            "pause.html",
            principal=principal,
            reason=reason,
            since=since,
            flash=self._flash(request),
        )

    async def pause(self, request: Request, principal: Principal) -> Response:
        form: dict[str, str] = request.state.form
        pausing = form.get("action") == "pause"
        reason = form.get("reason", "").strip()[:500]
        if pausing and not reason:
            return self._redirect("/pause", "give a reason to pause")

        def write() -> None:
            with self.store.session() as session:
                set_paused(
                    session,
                    f"{reason} (by {principal.user})" if pausing else None,
                    self.clock.now(),
                )

        await run_in_threadpool(write)
        log.info("console: %s %s the bot", principal.user, "paused" if pausing else "resumed")
        return self._redirect("/pause", "paused" if pausing else "resumed")

    async def outbox(self, request: Request, principal: Principal) -> Response:
        def read() -> list[OutboxMessage]:
            with self.store.session() as session:
                return data.outbox_dead(session)

        dead = await run_in_threadpool(read)
        return self._render("outbox.html", principal=principal, dead=dead)


async def _form(request: Request) -> dict[str, str] | None:
    """An ``application/x-www-form-urlencoded`` body as a flat dict (first value wins);
    None when it is larger than :data:`MAX_FORM_BYTES`."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        parsed = parse_qs(body.decode("utf-8"), max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items() if v}
