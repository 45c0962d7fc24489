"""Adapters: the only modules that import a client library (httpx, PyGithub, psycopg,
PyMySQL, sqlite3, prometheus_client, sentry-sdk). Each implements a port of the domain
packages and translates the library's errors into :mod:`bot.errors`."""
