"""Slack: the incoming-webhook notifier and interaction ``response_url`` posts (httpx)."""
