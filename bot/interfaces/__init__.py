"""The bot's interfaces: the HTTP server (``http/``); the CLI moves here later."""
