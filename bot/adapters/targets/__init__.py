"""Target databases by URL scheme: PostgreSQL (psycopg), MySQL/MariaDB (PyMySQL), SQLite."""
