"""The bot's own state store (SQLite by default, PostgreSQL for several replicas)."""
