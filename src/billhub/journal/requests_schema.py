"""The citizen requests' tables in the journal database, with their own versions.

They live beside the journal (one database to back up, one to configure) but are
versioned in ``requests_schema_version``, so the web service and the hub migrate
their own tables independently. The audit trail is append-only in the database
itself: a trigger refuses every UPDATE and DELETE of it. A migration is never
edited once released.
"""

from __future__ import annotations

from billhub.db.sqlite import Migration

VERSION_TABLE = "requests_schema_version"

_COMMON = [
    """CREATE TABLE citizen_requests (
        ticket TEXT PRIMARY KEY,
        company TEXT NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        account TEXT NOT NULL,
        phone TEXT NOT NULL,
        filed_at TEXT NOT NULL,
        due_at TEXT NOT NULL,
        decided_at TEXT,
        escalated_at TEXT,
        assignee TEXT,
        version INTEGER NOT NULL,
        body TEXT NOT NULL
    )""",
    "CREATE INDEX citizen_requests_queue ON citizen_requests (company, due_at)",
    "CREATE INDEX citizen_requests_filed ON citizen_requests (filed_at)",
    """CREATE TABLE staff (
        username TEXT PRIMARY KEY,
        company TEXT,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE staff_sessions (
        token_hash TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        csrf TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )""",
    """CREATE TABLE access_codes (
        code_key TEXT PRIMARY KEY,
        code_hash TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        tries INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE attachments (
        attachment_id TEXT PRIMARY KEY,
        ticket TEXT NOT NULL,
        content_type TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT NOT NULL
    )""",
    "CREATE INDEX attachments_ticket ON attachments (ticket)",
]

SQLITE_MIGRATIONS: list[Migration] = [
    (
        1,
        "citizen requests, staff, sessions, codes, attachments, append-only audit",
        [
            *_COMMON,
            """CREATE TABLE audit (
                audit_id INTEGER PRIMARY KEY AUTOINCREMENT,
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                company TEXT,
                action TEXT NOT NULL,
                ticket TEXT,
                detail TEXT NOT NULL
            )""",
            "CREATE INDEX audit_ticket ON audit (ticket)",
            """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
               BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
            """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
               BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
        ],
    ),
    (
        2,
        "hand-over of decisions to companies' billing systems",
        [
            """CREATE TABLE handovers (
                ticket TEXT PRIMARY KEY,
                company TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_at TEXT NOT NULL,
                reference TEXT,
                detail TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX handovers_due ON handovers (state, next_at)",
        ],
    ),
]

PG_MIGRATIONS: list[Migration] = [
    (
        1,
        "citizen requests, staff, sessions, codes, attachments, append-only audit",
        [
            *_COMMON,
            """CREATE TABLE audit (
                audit_id BIGSERIAL PRIMARY KEY,
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                company TEXT,
                action TEXT NOT NULL,
                ticket TEXT,
                detail TEXT NOT NULL
            )""",
            "CREATE INDEX audit_ticket ON audit (ticket)",
            """CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$""",
            """CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE OR TRUNCATE ON audit
               FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()""",
        ],
    ),
    (
        2,
        "hand-over of decisions to companies' billing systems",
        [
            """CREATE TABLE handovers (
                ticket TEXT PRIMARY KEY,
                company TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_at TEXT NOT NULL,
                reference TEXT,
                detail TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX handovers_due ON handovers (state, next_at)",
        ],
    ),
]
