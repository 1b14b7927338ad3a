-- The default biller schema of BILLERS.md section 2, PostgreSQL (specs/biller-database.md).
-- bills: what the company issued; paid is what has been paid of amount so far
-- (a bill is open while paid < amount). payments: what the hub posted, keyed by
-- the hub payment id. payment_bills: what each payment took off each bill, so that
-- a cancel gives back exactly that.
CREATE TABLE IF NOT EXISTS bills (
    bill_id         varchar(20)  PRIMARY KEY,
    account         varchar(28)  NOT NULL,
    customer_name   varchar(200) NOT NULL,
    account_status  varchar(7)   NOT NULL CHECK (account_status IN ('active', 'blocked', 'closed')),
    partial_allowed boolean      NOT NULL DEFAULT false,
    min_payment     bigint       NOT NULL DEFAULT 0 CHECK (min_payment >= 0),
    period          char(6)      NOT NULL,
    due_date        date         NOT NULL,
    amount          bigint       NOT NULL CHECK (amount > 0),
    paid            bigint       NOT NULL DEFAULT 0 CHECK (paid >= 0 AND paid <= amount)
);
CREATE INDEX IF NOT EXISTS bills_by_account ON bills (account, period, due_date);

CREATE TABLE IF NOT EXISTS payments (
    payment_id      varchar(64)  PRIMARY KEY,
    account         varchar(28)  NOT NULL,
    bill_id         varchar(20),
    amount          bigint       NOT NULL CHECK (amount > 0),
    settlement_date date         NOT NULL,
    acquirer        varchar(11)  NOT NULL,
    rrn             varchar(12)  NOT NULL,
    channel         char(4)      NOT NULL,
    paid_at         timestamptz  NOT NULL,
    receipt         varchar(20)  NOT NULL UNIQUE,
    status          varchar(9)   NOT NULL DEFAULT 'posted' CHECK (status IN ('posted', 'cancelled')),
    created_at      timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS payment_bills (
    payment_id      varchar(64)  NOT NULL REFERENCES payments (payment_id),
    bill_id         varchar(20)  NOT NULL REFERENCES bills (bill_id),
    amount          bigint       NOT NULL CHECK (amount > 0),
    PRIMARY KEY (payment_id, bill_id)
);
