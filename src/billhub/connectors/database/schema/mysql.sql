-- The default biller schema of BILLERS.md section 2, MariaDB 10.4+ / MySQL 8.0.16+
-- (specs/biller-database.md). The same tables as postgresql.sql; times are DATETIME(6)
-- in UTC (the hub writes UTC), BOOLEAN is TINYINT(1), text is utf8mb4 (Arabic names).
CREATE TABLE IF NOT EXISTS bills (
    bill_id         VARCHAR(20)  NOT NULL PRIMARY KEY,
    account         VARCHAR(28)  NOT NULL,
    customer_name   VARCHAR(200) NOT NULL,
    account_status  VARCHAR(7)   NOT NULL CHECK (account_status IN ('active', 'blocked', 'closed')),
    partial_allowed BOOLEAN      NOT NULL DEFAULT FALSE,
    min_payment     BIGINT       NOT NULL DEFAULT 0 CHECK (min_payment >= 0),
    period          CHAR(6)      NOT NULL,
    due_date        DATE         NOT NULL,
    amount          BIGINT       NOT NULL CHECK (amount > 0),
    paid            BIGINT       NOT NULL DEFAULT 0 CHECK (paid >= 0 AND paid <= amount),
    INDEX bills_by_account (account, period, due_date)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS payments (
    payment_id      VARCHAR(64)  NOT NULL PRIMARY KEY,
    account         VARCHAR(28)  NOT NULL,
    bill_id         VARCHAR(20)  NULL,
    amount          BIGINT       NOT NULL CHECK (amount > 0),
    settlement_date DATE         NOT NULL,
    acquirer        VARCHAR(11)  NOT NULL,
    rrn             VARCHAR(12)  NOT NULL,
    channel         CHAR(4)      NOT NULL,
    paid_at         DATETIME(6)  NOT NULL,
    receipt         VARCHAR(20)  NOT NULL UNIQUE,
    status          VARCHAR(9)   NOT NULL DEFAULT 'posted' CHECK (status IN ('posted', 'cancelled')),
    created_at      DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS payment_bills (
    payment_id      VARCHAR(64)  NOT NULL,
    bill_id         VARCHAR(20)  NOT NULL,
    amount          BIGINT       NOT NULL CHECK (amount > 0),
    PRIMARY KEY (payment_id, bill_id),
    FOREIGN KEY (payment_id) REFERENCES payments (payment_id),
    FOREIGN KEY (bill_id) REFERENCES bills (bill_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
