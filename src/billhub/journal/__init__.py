"""The journal: the durable record of every financial request, behind ports.

Use :func:`billhub.journal.factory.build_journal`; the adapters (SQLite today)
are named nowhere else.
"""
