"""The bot's exception tree. Every error the bot raises derives from :class:`BotError`.

::

    BotError
    ├── ConfigError                 bad or missing settings (CLI exits 2)
    ├── StoreError                  the bot's own state store
    ├── SentryError                 talking to Sentry failed for good
    │   ├── SentryRetryLater        rate-limited / unavailable: try again later
    │   ├── SentryNotFound          404
    │   ├── SentryBadRequest        400: Sentry refused the request (detail attached)
    │   │   └── SentryDuplicateComment  the same comment text within an hour
    │   ├── SentryBadResponse       malformed JSON or an unexpected shape
    │   ├── WebhookRejected         a webhook delivery that does not fit its resource
    │   └── SentryDeadline          a response or a whole listing took too long (retry later)
    ├── PlaybookError               a playbook file is invalid (file, line, field)
    ├── RemediationError            an action failed; the transaction was rolled back
    │   ├── TooManyRows             would touch more than max_rows
    │   ├── TargetUnavailable       no DSN configured / cannot connect (retry later)
    │   ├── LockTimeout             lock_timeout / statement_timeout hit
    │   └── VerificationFailed      the remedy did not take effect
    ├── GuardrailBlocked            a guard (pause, cooldown, cap, breaker) refused a run
    ├── RunNotFound                 no remediation run (of that kind) with that id
    ├── NotifyError                 webhook delivery failed
    │   └── NotifyRetryLater        429 / 5xx: try again later
    ├── CodeHostError               GitHub failed
    │   ├── CodeHostRepoUnavailable a repository GitHub will not search (422): skip it
    │   └── CodeHostRetryLater      rate-limited: try again later
    └── RequestRejected             an inbound HTTP request failed authentication (401)

"Try again later" errors derive from :class:`RetryLater` too, so a caller can catch
that one type for everything transient. Errors carry context (issue, playbook, file,
line) as attributes; messages never contain secrets.
"""

from __future__ import annotations


class BotError(Exception):
    """The bot failed."""

    def __init__(self, message: str | None = None, **context: object) -> None:
        self.context = context
        super().__init__(message or (self.__doc__ or "").strip())

    def __str__(self) -> str:
        base = super().__str__()
        if not self.context:
            return base
        extra = ", ".join(f"{k}={v}" for k, v in self.context.items() if v is not None)
        return f"{base} ({extra})" if extra else base


class RetryLater(BotError):
    """A transient failure: the same call may succeed later."""

    def __init__(
        self, message: str | None = None, *, retry_after: float | None = None, **context: object
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, **context)


class ConfigError(BotError):
    """The configuration is invalid."""


class StoreError(BotError):
    """The bot's state store failed."""


class SentryError(BotError):
    """Talking to Sentry failed."""


class SentryRetryLater(SentryError, RetryLater):
    """Sentry is rate-limiting us or is unavailable; try again later."""


class SentryNotFound(SentryError):
    """Sentry does not know this resource."""


class WebhookRejected(SentryError):
    """The webhook delivery is not one the bot accepts."""


class SentryBadRequest(SentryError):
    """Sentry refused the request as invalid (400), e.g. an inCommit it does not know."""


class SentryDuplicateComment(SentryBadRequest):
    """Sentry refused a comment because the same text was posted within the last hour."""


class SentryBadResponse(SentryError):
    """Sentry answered with something we cannot read."""


class SentryDeadline(SentryRetryLater):
    """Sentry did not finish answering within the deadline; the next cycle tries again."""


class PlaybookError(BotError):
    """A playbook is invalid."""


class RemediationError(BotError):
    """A remediation failed and was rolled back."""


class TooManyRows(RemediationError):
    """The action would change more rows than max_rows allows; rolled back."""


class RunRefused(RemediationError):
    """One run of a batch sharing a transaction was refused (``index`` names it); the
    caller rolls back to its savepoint and goes on without it."""

    def __init__(self, index: int, cause: BotError) -> None:
        super().__init__(f"run {index} of the batch refused: {cause}")
        self.index = index
        self.cause = cause


class TargetUnavailable(RemediationError, RetryLater):
    """The target database is not configured or not reachable."""


class LockTimeout(RemediationError, RetryLater):
    """The action hit lock_timeout or statement_timeout; rolled back."""


class VerificationFailed(RemediationError):
    """The remedy ran but verification shows it did not take effect."""


class GuardrailBlocked(BotError):
    """A guardrail refused to run this remediation."""


class RunNotFound(BotError):
    """No remediation run (of the kind asked for) has that id."""


class NotifyError(BotError):
    """Delivering a notification failed."""


class NotifyRetryLater(NotifyError, RetryLater):
    """The webhook asked us to slow down or is unavailable; try again later."""


class CodeHostError(BotError):
    """The code host (GitHub) failed."""


class CodeHostRetryLater(CodeHostError, RetryLater):
    """The code host rate-limited us; try again later."""


class RequestRejected(BotError):
    """The request was not authenticated (bad or missing signature, stale, replayed)."""


class CodeHostRepoUnavailable(CodeHostError):
    """GitHub cannot search this repository (unknown, or not visible to the token)."""
