"""sentry-remediation-bot: poll Sentry, match playbooks, remediate safely, resolve when quiet."""

from __future__ import annotations

__version__ = "0.1.0"
