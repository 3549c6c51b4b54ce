-- 0005_imap_slots.sql — IMAP connection slots (sources/connlimit.h).
--
-- Every process that opens an IMAP connection (fetch copies, scan) first takes
-- one slot of the account's scope and one of the server's, in one statement,
-- and gives both back when it drops the connection. scope is 'account:<id>'
-- or 'host:<host>:<port>'; the slots 0 .. limit-1 of a scope are created on
-- first use. A slot is free when it has no holder or its lease has expired:
-- a holder renews it while connected, so the slot of a process killed with
-- SIGKILL comes back by itself when its lease runs out. Expiry is by the
-- server's clock.
CREATE TABLE imap_slots (
    scope       text NOT NULL,
    slot        int NOT NULL CHECK (slot >= 0),
    holder      text,
    expires_at  timestamptz,
    PRIMARY KEY (scope, slot)
);
