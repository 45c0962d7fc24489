"""Planner, guardrails, journal and executor: from a match to a verified remediation."""
