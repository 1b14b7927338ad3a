"""Database plumbing shared by every adapter that owns a database, and nothing else.

Migrations and transaction helpers for SQLite (the journal, the batch billers'
stores). No domain knowledge lives here; it imports only :mod:`billhub.errors`.
"""
