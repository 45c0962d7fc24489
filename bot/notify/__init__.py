"""Notifications: the message model and renderer (``messages``), the approval request
(``approval_message``) and the sender port (``port``). The Slack webhook adapter lives in
:mod:`bot.adapters.slack`, the delivery outbox in :mod:`bot.pipeline.outbox`."""
