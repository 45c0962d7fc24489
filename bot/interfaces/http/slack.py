"""``POST /hooks/slack/interactive``: Approve / Deny buttons clicked in Slack.

Order matters, and is the whole security story:

1. verify the signature on the raw body and the timestamp (5 minutes) before parsing
   anything (:mod:`bot.interfaces.http.slack_verify`) → 401;
2. honour one signed request once (durable nonce in the state store) → replay gets 401;
3. parse ``payload=`` (form-encoded JSON, ``type: block_actions``) into a strict model;
4. decide through :class:`~bot.pipeline.approvals.ApprovalService` (``BOT_APPROVERS``,
   fail closed; compare-and-set; journaled), a few store round trips;
5. answer 200 at once (Slack wants the ack within 3 seconds) and do the slow part after
   the response is sent: the leader executes the approved run, and every reply (outcome,
   "expired", "already handled", the ephemeral refusal) goes through the outbox to the
   click's ``response_url``.

The facts followed: DESIGN.md "Slack interactivity"; the payload fields as Slack sends
them for ``block_actions`` (``type``, ``user.id``, ``actions[].action_id`` /
``value``, ``response_url``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bot.adapters.slack.response_url import SLACK_RESPONSE_CHANNEL
from bot.clock import Clock
from bot.errors import RequestRejected
from bot.interfaces.http.slack_verify import NonceStore, verify_slack_request
from bot.notify.approval_message import ephemeral, outcome_message
from bot.pipeline.approvals import Action, ApprovalOutcome, ApprovalResult, ApprovalService, Channel
from bot.pipeline.outbox import enqueue
from bot.store.db import Store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024  # Slack's block_actions payloads are a few KB
PATH = "/hooks/slack/interactive"


class _User(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=64)


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore")
    action_id: str = Field(max_length=255)
    value: str | None = Field(default=None, max_length=2000)


class BlockActions(BaseModel):
    """The parts of a ``block_actions`` payload the bot reads (the rest is ignored)."""

    model_config = ConfigDict(extra="ignore")
    type: str
    user: _User
    actions: list[_Action] = Field(default_factory=list, max_length=25)
    response_url: str | None = Field(default=None, max_length=2048)


@dataclass
class SlackInteractions:
    """What the endpoint needs; built once by the app factory.

    ``run_approved(run_id)`` runs after the ack: the leader executes the run (the
    executor's own compare-and-set makes a second executor a no-op), a standby leaves it
    for the leader's next poll step. ``flush_replies()`` delivers queued replies now.
    """

    store: Store
    clock: Clock
    signing_secret: str | None
    approvals: ApprovalService
    nonces: NonceStore
    run_approved: Callable[[str], None]
    flush_replies: Callable[[], None]

    def routes(self) -> list[Route]:
        return [Route(PATH, self.interactive, methods=["POST"])]

    async def interactive(self, request: Request) -> Response:
        if not self.signing_secret:
            return PlainTextResponse("Slack interactivity is not configured", status_code=404)
        body = await _read_limited(request)
        if body is None:
            return PlainTextResponse("payload too large", status_code=413)
        try:
            signature = request.headers.get("x-slack-signature")
            verify_slack_request(
                self.signing_secret,
                request.headers.get("x-slack-request-timestamp"),
                signature,
                body,
                self.clock.now(),
            )
            fresh = await run_in_threadpool(self.nonces.use_once, f"slack:{signature}")
            if not fresh:
                raise RequestRejected("replayed Slack request")
        except RequestRejected as exc:
            log.warning("slack interactive request refused: %s", exc)
            return PlainTextResponse(str(exc), status_code=401)
        payload = _parse(body)
        if payload is None:
            return PlainTextResponse("expected payload= with block_actions JSON", status_code=400)
        if payload.type != "block_actions" or not payload.actions:
            return Response(status_code=200)  # not ours (e.g. a shortcut): ack, do nothing
        act = payload.actions[0]
        if act.action_id not in (Action.APPROVE.value, Action.DENY.value) or not act.value:
            return Response(status_code=200)
        result = await run_in_threadpool(
            self.approvals.decide,
            act.value.strip(),
            Action(act.action_id),
            payload.user.id,
            Channel.SLACK,
            reply_url=payload.response_url,
        )
        await run_in_threadpool(self._queue_reply, result, payload.response_url)
        # The ack goes out now; execution and replies happen after it is sent.
        return Response(status_code=200, background=BackgroundTask(self._after, result))

    def _queue_reply(self, result: ApprovalResult, reply_url: str | None) -> None:
        """Queue the immediate reply for every outcome except an approval, whose reply
        (rows changed, verification) is queued when the run has executed."""
        if not reply_url or result.outcome is ApprovalOutcome.APPROVED:
            return
        if result.outcome is ApprovalOutcome.NOT_AN_APPROVER:
            body = ephemeral(f"Sorry, {result.message}.")
        elif result.outcome is ApprovalOutcome.DENIED:
            body = outcome_message(f"Denied: {result.message}", ["nothing was executed"])
        elif result.outcome is ApprovalOutcome.EXPIRED:
            body = outcome_message(f"Expired: {result.message}")
        elif result.outcome is ApprovalOutcome.ALREADY_HANDLED:
            body = outcome_message(f"Already handled: {result.message}")
        else:
            body = ephemeral(result.message)
        now = self.clock.now()
        with self.store.session() as session:
            # One reply per click (each click is a distinct signed request).
            key = f"slack_response:{result.outcome.value}:{result.run_id}:{uuid.uuid4().hex}"
            enqueue(
                session,
                SLACK_RESPONSE_CHANNEL,
                key[:256],
                {"url": reply_url, "body": body},
                result.issue_id,
                f"approval_{result.outcome.value}",
                now,
            )

    def _after(self, result: ApprovalResult) -> None:
        try:
            if result.outcome is ApprovalOutcome.APPROVED:
                self.run_approved(result.run_id)
            self.flush_replies()
        except Exception:  # a background failure must not go unnoticed, nor crash serve
            log.exception("after approving run %s", result.run_id[:8])


async def _read_limited(request: Request) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> BlockActions | None:
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=False, max_num_fields=20)
        [raw] = form.get("payload", [""])
        return BlockActions.model_validate(json.loads(raw))
    except (UnicodeDecodeError, ValueError, ValidationError):
        return None
