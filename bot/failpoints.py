"""Named crash points: make "the process died right here" a deterministic test case.

Every boundary where state changes hands (the store, a target database, the webhook,
Sentry) calls :func:`hit` with a name from :data:`FAILPOINTS`. Normally that is a
dictionary lookup and nothing else. When the operator (or a test) arms one name with
``BOT_FAILPOINT=<name>``, the process dies at that point at once with
``os._exit(<the name's exit code>)``: no ``finally`` blocks, no flush, no rollback
message to the server - the same as ``kill -9``. ``sentry-bot debug failpoints`` lists
every name; the README's "Crash safety" section says what a restart does after each.

The variable is read once, by the CLI, through :class:`~bot.settings.Settings`
(``failpoint``), and handed to :func:`arm`; nothing here reads the environment, and no
other module reads it at import time.
"""

from __future__ import annotations

import os
import sys

# name -> where the process dies. Order is the order a remediation passes them.
FAILPOINTS: dict[str, str] = {
    "after-track": "polled issues are tracked (committed), before triage and matching",
    "after-match": "the issue is journaled 'matched', before the run is journaled",
    "after-journal": "the run is journaled (approved), before it is claimed and executed",
    "target-before-commit": "the action ran inside the target transaction, before COMMIT",
    "target-after-commit": "the target transaction committed, before the run is marked",
    "after-succeeded": "the run is marked succeeded/noop, before verification starts",
    "before-verify": "right before the verification query on the target",
    "after-verify": "the verification and its notification are committed",
    "before-send": "an outbox message is claimed (sending), before the HTTP request",
    "after-send": "the receiver accepted the message, before it is marked sent",
    "before-resolve": "quiet hours confirmed, before the Sentry resolve request",
    "after-resolve": "Sentry resolved the issue, before the store records it",
    "flag-revert-journaled": "a set_flag revert is journaled, before the target UPDATE",
    "flag-revert-committed": "the set_flag revert committed on the target, before it is recorded",
}

# Exit status when a failpoint fires: 101, 102, … in the order above, so a test can
# tell which one killed the process (and that it was a failpoint, not a crash).
EXIT_BASE = 100


def exit_code(name: str) -> int:
    """The exit status of the process when failpoint ``name`` fires."""
    return EXIT_BASE + 1 + list(FAILPOINTS).index(name)


class UnknownFailpoint(ValueError):
    """``BOT_FAILPOINT`` names no failpoint (a typo must not silently arm nothing)."""


_armed: list[str] = []  # at most one name; a list so arm() needs no ``global``


def arm(name: str | None) -> None:
    """Arm failpoint ``name`` for this process (None disarms). Called once by the CLI."""
    if name is not None and name not in FAILPOINTS:
        raise UnknownFailpoint(
            f"unknown failpoint {name!r}; `sentry-bot debug failpoints` lists them"
        )
    _armed.clear()
    if name is not None:
        _armed.append(name)


def armed() -> str | None:
    """The armed failpoint, if any."""
    return _armed[0] if _armed else None


def hit(name: str) -> None:
    """Die here (``os._exit``) if ``name`` is the armed failpoint; otherwise do nothing."""
    if name not in FAILPOINTS:  # a typo at a call site must fail every test, loudly
        raise UnknownFailpoint(f"hit() with unknown failpoint {name!r}")
    if _armed and _armed[0] == name:
        # One line so an operator reading the log knows this was deliberate.
        sys.stderr.write(f"failpoint {name} hit: exiting with status {exit_code(name)}\n")
        sys.stderr.flush()
        os._exit(exit_code(name))
