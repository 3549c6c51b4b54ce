-- 0008_cleanup.sql — the cleanup job (stages/store/cleanup.c): emails deleted
-- for longer than the retention are purged, and blobs no email references
-- any more are removed from the blob store.

-- "Does any email (of any account) reference this blob?" is asked for every
-- blob the cleanup considers; (account_id, blob_sha256) cannot answer it
-- without a scan.
CREATE INDEX emails_blob_idx ON emails (blob_sha256);

-- Blobs that may have lost their last reference: every deleted emails row
-- (a purge, an account removed with its emails) queues its blob here in the
-- same transaction, so a crash between the purge and the blob removal
-- forgets nothing; the cleanup's walk of the blob store queues blobs no
-- email ever referenced (a cancelled import's, a message given up on).
-- A pass removes an entry once the blob is removed, gone, or referenced
-- again; an entry kept because the blob was wanted recently stays for the
-- next pass. seq changes when a blob is queued again, so a pass never drops
-- an entry queued again after it looked (a reference deleted meanwhile).
-- account_id: the account whose email held it last (a plain id, like
-- dead_letters: the account may be gone).
CREATE SEQUENCE blob_gc_seq;
CREATE TABLE blob_gc (
    sha256      bytea PRIMARY KEY CHECK (octet_length(sha256) = 32),
    account_id  bigint,
    seq         bigint NOT NULL DEFAULT nextval('blob_gc_seq'),
    queued_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION mb_emails_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO blob_gc (sha256, account_id)
    SELECT DISTINCT ON (blob_sha256) blob_sha256, account_id FROM gone
    ORDER BY blob_sha256, account_id
    ON CONFLICT (sha256) DO UPDATE SET account_id = EXCLUDED.account_id,
        seq = nextval('blob_gc_seq'), queued_at = now();
    RETURN NULL;
END $$;

-- One statement-level trigger (a transition table), not one call per row:
-- removing an account with a million emails queues their blobs in one INSERT.
CREATE TRIGGER emails_deleted AFTER DELETE ON emails
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION mb_emails_deleted();

-- One row per cleanup pass that changed something or could have (dry runs
-- are not recorded): when the store stage's timer runs the next one (every
-- MAILBUS_CLEANUP_EVERY_MS, whichever store copy holds the lease), where the
-- walk of the blob store goes on (walk_next: the next of the 256 blob
-- directories), and what the pass did. Per account, the pass also writes a
-- sync_history row (event 'cleanup').
CREATE TABLE cleanup_passes (
    id                     bigserial PRIMARY KEY,
    holder                 text NOT NULL,
    retention_s            bigint NOT NULL,
    started_at             timestamptz NOT NULL,
    finished_at            timestamptz NOT NULL DEFAULT now(),
    emails_purged          bigint NOT NULL DEFAULT 0,
    blobs_queued           bigint NOT NULL DEFAULT 0,
    blobs_removed          bigint NOT NULL DEFAULT 0,
    blobs_kept_referenced  bigint NOT NULL DEFAULT 0,
    blobs_kept_recent      bigint NOT NULL DEFAULT 0,
    blobs_absent           bigint NOT NULL DEFAULT 0,
    walk_next              int NOT NULL DEFAULT 0 CHECK (walk_next BETWEEN 0 AND 255),
    error                  text
);
CREATE INDEX cleanup_passes_started_idx ON cleanup_passes (started_at DESC);
