"""``python -m bot`` is the same as the ``sentry-bot`` console script."""

from __future__ import annotations

from bot.interfaces.cli import main

if __name__ == "__main__":
    main()
