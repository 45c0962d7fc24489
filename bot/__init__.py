"""sentry-remediation-bot: poll Sentry, match playbooks, remediate safely, resolve after quiet hours."""

from __future__ import annotations

__version__ = "0.1.0"
