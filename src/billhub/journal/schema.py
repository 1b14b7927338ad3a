"""Versioned schema migrations for the journal, in order; each runs once, in a transaction.

A migration is never edited once released: a change is a new migration. The
SQL sticks to what SQLite and PostgreSQL both accept.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "payments, reversals and resolver tasks",
        [
            """CREATE TABLE payments (
                payment_id TEXT PRIMARY KEY,
                acquirer TEXT NOT NULL,
                rrn TEXT NOT NULL,
                settlement_mmdd TEXT NOT NULL,
                settlement_date TEXT NOT NULL,
                biller TEXT NOT NULL,
                account TEXT NOT NULL,
                bill_id TEXT,
                amount BIGINT NOT NULL CHECK (amount >= 0),
                currency TEXT NOT NULL,
                channel TEXT NOT NULL,
                forwarder TEXT NOT NULL,
                content TEXT NOT NULL,
                received_at TEXT NOT NULL,
                state TEXT NOT NULL,
                response_code TEXT,
                approval_code TEXT,
                answer_de48 TEXT,
                receipt TEXT,
                customer_name TEXT,
                answered_at TEXT,
                reversed INTEGER NOT NULL DEFAULT 0,
                resolution TEXT,
                seq BIGINT NOT NULL,
                UNIQUE (acquirer, rrn, settlement_mmdd)
            )""",
            "CREATE INDEX payments_biller_date ON payments (biller, settlement_date, state)",
            "CREATE INDEX payments_state ON payments (state)",
            """CREATE TABLE reversals (
                acquirer TEXT NOT NULL,
                rrn TEXT NOT NULL,
                settlement_mmdd TEXT NOT NULL,
                settlement_date TEXT NOT NULL,
                biller TEXT NOT NULL,
                amount BIGINT NOT NULL,
                received_at TEXT NOT NULL,
                response_code TEXT NOT NULL,
                payment_id TEXT,
                booked_on TEXT,
                cancel_state TEXT NOT NULL,
                seq BIGINT NOT NULL,
                PRIMARY KEY (acquirer, rrn, settlement_mmdd)
            )""",
            "CREATE INDEX reversals_booked ON reversals (biller, booked_on)",
            """CREATE TABLE tasks (
                task_id INTEGER PRIMARY KEY,
                kind TEXT NOT NULL,
                payment_id TEXT NOT NULL,
                biller TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                next_at TEXT NOT NULL,
                created_at TEXT NOT NULL,
                not_before_final TEXT,
                detail TEXT,
                done_at TEXT,
                outcome TEXT
            )""",
            "CREATE INDEX tasks_open ON tasks (done_at, next_at)",
        ],
    ),
    (
        2,
        "business days, reconciliations, findings, settlement files",
        [
            """CREATE TABLE cutovers (
                new_date TEXT PRIMARY KEY,
                previous_date TEXT,
                closed_dates TEXT NOT NULL,
                state TEXT NOT NULL,
                requested_at TEXT NOT NULL,
                closed_at TEXT
            )""",
            """CREATE TABLE payments_files (
                biller TEXT NOT NULL,
                settlement_date TEXT NOT NULL,
                path TEXT NOT NULL,
                written_at TEXT NOT NULL,
                PRIMARY KEY (biller, settlement_date)
            )""",
            """CREATE TABLE reconciliations (
                seq INTEGER PRIMARY KEY,
                biller TEXT NOT NULL,
                settlement_date TEXT NOT NULL,
                switch_count BIGINT NOT NULL,
                switch_amount BIGINT NOT NULL,
                switch_reversal_count BIGINT NOT NULL,
                switch_reversal_amount BIGINT NOT NULL,
                hub_count BIGINT NOT NULL,
                hub_amount BIGINT NOT NULL,
                hub_reversal_count BIGINT NOT NULL,
                hub_reversal_amount BIGINT NOT NULL,
                response_code TEXT NOT NULL,
                answered_at TEXT NOT NULL
            )""",
            "CREATE INDEX reconciliations_day ON reconciliations (settlement_date, biller)",
            """CREATE TABLE findings (
                seq INTEGER PRIMARY KEY,
                kind TEXT NOT NULL,
                settlement_date TEXT NOT NULL,
                biller TEXT NOT NULL,
                acquirer TEXT,
                rrn TEXT,
                hub TEXT NOT NULL,
                switch TEXT NOT NULL,
                detail TEXT NOT NULL,
                source TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX findings_day ON findings (settlement_date)",
            """CREATE TABLE settlement_imports (
                sha256 TEXT PRIMARY KEY,
                file_name TEXT NOT NULL,
                lines BIGINT NOT NULL,
                matched BIGINT NOT NULL,
                imported_at TEXT NOT NULL
            )""",
            "CREATE INDEX reversals_day ON reversals (settlement_date, biller)",
            "CREATE INDEX payments_day ON payments (settlement_date, state)",
        ],
    ),
    (
        3,
        "which hub instance wrote each payment: recovery takes only those of instances gone",
        ["ALTER TABLE payments ADD COLUMN instance TEXT"],
    ),
    (
        4,
        "the batch billers' stores: bills files, bills, account names, bills taken by payments",
        [
            """CREATE TABLE bills_files (
                file_id INTEGER PRIMARY KEY,
                biller TEXT NOT NULL,
                name TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                file_order TEXT NOT NULL,
                row_count BIGINT NOT NULL,
                loaded_on TEXT NOT NULL,
                seq BIGINT NOT NULL,
                UNIQUE (biller, name),
                UNIQUE (biller, sha256)
            )""",
            """CREATE TABLE bills (
                biller TEXT NOT NULL,
                bill_id TEXT NOT NULL,
                account TEXT NOT NULL,
                customer_name TEXT NOT NULL,
                period TEXT NOT NULL,
                due_date TEXT NOT NULL,
                amount BIGINT NOT NULL CHECK (amount >= 0),
                status TEXT NOT NULL CHECK (status IN ('open', 'paid', 'cancelled', 'blocked')),
                file_order TEXT NOT NULL,
                row_no BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                PRIMARY KEY (biller, bill_id)
            )""",
            "CREATE INDEX bills_status ON bills (biller, status)",
            "CREATE INDEX bills_seq ON bills (biller, seq)",
            """CREATE TABLE bill_accounts (
                biller TEXT NOT NULL,
                account TEXT NOT NULL,
                customer_name TEXT NOT NULL,
                name_order TEXT NOT NULL,
                PRIMARY KEY (biller, account)
            )""",
            """CREATE TABLE bill_claims (
                biller TEXT NOT NULL,
                bill_id TEXT NOT NULL,
                payment_id TEXT NOT NULL,
                active INTEGER NOT NULL,
                seq BIGINT NOT NULL,
                PRIMARY KEY (biller, bill_id)
            )""",
            "CREATE INDEX bill_claims_payment ON bill_claims (biller, payment_id)",
            "CREATE INDEX bill_claims_seq ON bill_claims (biller, seq)",
        ],
    ),
    (
        5,
        "payments of a biller and date in journal order (payments files, read in pages)",
        [
            "CREATE INDEX payments_file_order ON payments (biller, settlement_date, state, seq)",
        ],
    ),
    (
        6,
        "start-up independent of history: the counter's last value by index, and the bills "
        "a payment holds marked on the bill (the batch billers' view reads only those offered)",
        [
            "CREATE INDEX payments_seq ON payments (seq)",
            "CREATE INDEX reversals_seq ON reversals (seq)",
            "ALTER TABLE bills ADD COLUMN taken INTEGER NOT NULL DEFAULT 0",
            "UPDATE bills SET taken = 1 WHERE EXISTS (SELECT 1 FROM bill_claims k "
            "WHERE k.biller = bills.biller AND k.bill_id = bills.bill_id AND k.active = 1)",
            """CREATE TRIGGER bill_claims_taken_insert AFTER INSERT ON bill_claims BEGIN
                UPDATE bills SET taken = NEW.active
                WHERE biller = NEW.biller AND bill_id = NEW.bill_id;
            END""",
            """CREATE TRIGGER bill_claims_taken_update AFTER UPDATE OF active ON bill_claims
            BEGIN
                UPDATE bills SET taken = NEW.active
                WHERE biller = NEW.biller AND bill_id = NEW.bill_id;
            END""",
            "CREATE INDEX bills_offered ON bills (biller) "
            "WHERE status IN ('open', 'blocked') AND taken = 0",
        ],
    ),
    (
        7,
        "a day's sums from the index alone (0500 totals, report groups); replaces payments_day",
        [
            "CREATE INDEX payments_day_sums ON payments "
            "(settlement_date, state, biller, acquirer, channel, amount)",
            "DROP INDEX payments_day",
        ],
    ),
]
