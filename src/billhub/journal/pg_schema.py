"""Versioned migrations of the PostgreSQL journal, in order; each runs once, in a transaction.

Its own list, not the SQLite one: the journals store the same records the same
way (:mod:`billhub.journal.codec`: ISO text for dates and times, integers for
money), but PostgreSQL has what several hub instances need and SQLite does not:
a sequence for the order of records, the instances' heartbeats, and claims on
resolver tasks. A released migration is never edited: a change is a new one.
"""

from __future__ import annotations

PG_MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "payments, reversals, resolver tasks, business days, clearing, instances",
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
                seq BIGSERIAL NOT NULL,
                instance TEXT,
                UNIQUE (acquirer, rrn, settlement_mmdd)
            )""",
            "CREATE INDEX payments_biller_date ON payments (biller, settlement_date, state)",
            "CREATE INDEX payments_state ON payments (state)",
            "CREATE INDEX payments_day ON payments (settlement_date, state)",
            "CREATE INDEX payments_rrn ON payments (rtrim(rrn))",
            "CREATE INDEX payments_seq ON payments (seq)",
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
                seq BIGSERIAL NOT NULL,
                PRIMARY KEY (acquirer, rrn, settlement_mmdd)
            )""",
            "CREATE INDEX reversals_booked ON reversals (biller, booked_on)",
            "CREATE INDEX reversals_day ON reversals (settlement_date, biller)",
            "CREATE INDEX reversals_rrn ON reversals (rtrim(rrn))",
            """CREATE TABLE tasks (
                task_id BIGSERIAL PRIMARY KEY,
                kind TEXT NOT NULL,
                payment_id TEXT NOT NULL,
                biller TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                next_at TEXT NOT NULL,
                created_at TEXT NOT NULL,
                not_before_final TEXT,
                detail TEXT,
                done_at TEXT,
                outcome TEXT,
                claimed_by TEXT,
                claimed_until TIMESTAMPTZ
            )""",
            "CREATE INDEX tasks_open ON tasks (next_at) WHERE done_at IS NULL",
            "CREATE INDEX tasks_payment ON tasks (payment_id)",
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
                seq BIGSERIAL PRIMARY KEY,
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
                seq BIGSERIAL PRIMARY KEY,
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
            """CREATE TABLE instances (
                instance TEXT PRIMARY KEY,
                started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                stopped_at TIMESTAMPTZ
            )""",
        ],
    ),
    (
        2,
        "the journal's invariants as functions: one round trip, one lock per key",
        [
            # A payment is inserted only if its key is new, no reversal of the key came
            # first (LINK-SPEC 6.4) and, for a posting or an approval, its settlement
            # date is not closed (6.1), all under a lock on the key for the rest of the
            # transaction, which a reversal of the same key takes too.
            """CREATE FUNCTION billhub_insert_payment(
                p_payment_id TEXT, p_acquirer TEXT, p_rrn TEXT, p_mmdd TEXT,
                p_settlement_date TEXT, p_biller TEXT, p_account TEXT, p_bill_id TEXT,
                p_amount BIGINT, p_currency TEXT, p_channel TEXT, p_forwarder TEXT,
                p_content TEXT, p_received_at TEXT, p_state TEXT, p_response_code TEXT,
                p_approval_code TEXT, p_answer_de48 TEXT, p_receipt TEXT,
                p_customer_name TEXT, p_answered_at TEXT, p_reversed INTEGER,
                p_resolution TEXT, p_instance TEXT, p_check_date BOOLEAN
            ) RETURNS TEXT LANGUAGE plpgsql AS $fn$
            BEGIN
                PERFORM pg_advisory_xact_lock(
                    hashtextextended(p_acquirer || '|' || p_rrn || '|' || p_mmdd, 0));
                IF EXISTS (SELECT 1 FROM payments WHERE acquirer = p_acquirer
                           AND rrn = p_rrn AND settlement_mmdd = p_mmdd) THEN
                    RETURN 'exists';
                END IF;
                IF EXISTS (SELECT 1 FROM reversals WHERE acquirer = p_acquirer
                           AND rrn = p_rrn AND settlement_mmdd = p_mmdd
                           AND payment_id IS NULL) THEN
                    RETURN 'reversed';
                END IF;
                IF p_check_date AND EXISTS (SELECT 1 FROM cutovers
                                            WHERE new_date > p_settlement_date) THEN
                    RETURN 'closed';
                END IF;
                INSERT INTO payments (payment_id, acquirer, rrn, settlement_mmdd,
                    settlement_date, biller, account, bill_id, amount, currency, channel,
                    forwarder, content, received_at, state, response_code, approval_code,
                    answer_de48, receipt, customer_name, answered_at, reversed, resolution,
                    instance)
                VALUES (p_payment_id, p_acquirer, p_rrn, p_mmdd, p_settlement_date,
                    p_biller, p_account, p_bill_id, p_amount, p_currency, p_channel,
                    p_forwarder, p_content, p_received_at, p_state, p_response_code,
                    p_approval_code, p_answer_de48, p_receipt, p_customer_name,
                    p_answered_at, p_reversed, p_resolution, p_instance);
                RETURN 'created';
            END
            $fn$""",
            # A reversal that names no payment is recorded only while none of its key
            # exists, under the same lock.
            """CREATE FUNCTION billhub_insert_lone_reversal(
                p_acquirer TEXT, p_rrn TEXT, p_mmdd TEXT, p_settlement_date TEXT,
                p_biller TEXT, p_amount BIGINT, p_received_at TEXT, p_response_code TEXT,
                p_booked_on TEXT, p_cancel_state TEXT
            ) RETURNS TEXT LANGUAGE plpgsql AS $fn$
            BEGIN
                PERFORM pg_advisory_xact_lock(
                    hashtextextended(p_acquirer || '|' || p_rrn || '|' || p_mmdd, 0));
                IF EXISTS (SELECT 1 FROM payments WHERE acquirer = p_acquirer
                           AND rrn = p_rrn AND settlement_mmdd = p_mmdd) THEN
                    RETURN 'taken';
                END IF;
                INSERT INTO reversals (acquirer, rrn, settlement_mmdd, settlement_date,
                    biller, amount, received_at, response_code, payment_id, booked_on,
                    cancel_state)
                VALUES (p_acquirer, p_rrn, p_mmdd, p_settlement_date, p_biller, p_amount,
                    p_received_at, p_response_code, NULL, p_booked_on, p_cancel_state);
                RETURN 'ok';
            END
            $fn$""",
        ],
    ),
    (
        3,
        "the batch billers' stores: bills files, bills, account names, bills taken by payments",
        [
            """CREATE TABLE bills_files (
                file_id BIGSERIAL PRIMARY KEY,
                biller TEXT NOT NULL,
                name TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                file_order TEXT NOT NULL,
                row_count BIGINT NOT NULL,
                loaded_on TEXT NOT NULL,
                seq BIGINT NOT NULL,
                xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
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
                xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
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
                xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                PRIMARY KEY (biller, bill_id)
            )""",
            "CREATE INDEX bill_claims_payment ON bill_claims (biller, payment_id)",
            "CREATE INDEX bill_claims_seq ON bill_claims (biller, seq)",
            "CREATE INDEX bills_xid ON bills (biller, xid)",
            "CREATE INDEX bill_claims_xid ON bill_claims (biller, xid)",
            "CREATE SEQUENCE bills_seq_numbers",
        ],
    ),
    (
        4,
        "payments of a biller and date in journal order (payments files, read in pages)",
        [
            "CREATE INDEX payments_file_order ON payments (biller, settlement_date, state, seq)",
        ],
    ),
    (
        5,
        "the bills a payment holds marked on the bill: the batch billers' view reads only "
        "those offered, whatever the history",
        [
            "ALTER TABLE bills ADD COLUMN taken INTEGER NOT NULL DEFAULT 0",
            "UPDATE bills b SET taken = 1 FROM bill_claims k WHERE k.biller = b.biller "
            "AND k.bill_id = b.bill_id AND k.active = 1",
            """CREATE FUNCTION billhub_bill_taken() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE bills SET taken = NEW.active
                WHERE biller = NEW.biller AND bill_id = NEW.bill_id;
                RETURN NULL;
            END $$""",
            "CREATE TRIGGER bill_claims_taken AFTER INSERT OR UPDATE OF active ON bill_claims "
            "FOR EACH ROW EXECUTE FUNCTION billhub_bill_taken()",
            "CREATE INDEX bills_offered ON bills (biller) "
            "WHERE status IN ('open', 'blocked') AND taken = 0",
        ],
    ),
    (
        6,
        "a day's sums from the index alone (0500 totals, report groups); replaces payments_day",
        [
            "CREATE INDEX payments_day_sums ON payments "
            "(settlement_date, state, biller, acquirer, channel, amount)",
            "DROP INDEX payments_day",
        ],
    ),
]
