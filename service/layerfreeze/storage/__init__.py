"""Durable state: job records (SQLite) and job files (the data directory)."""
