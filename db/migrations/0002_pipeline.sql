-- 0002_pipeline.sql — what the import pipeline records beyond 0001.
--
-- job_messages carries each scanned message's metadata (so a chunk's fetch
-- task can be rebuilt after any crash) and one progress bit per stage in st:
-- 1 fetched, 2 parsed, 4 stored, 8 failed (given up on). Setting a bit is
-- idempotent and counters are recounted from the bits, so they stay exact
-- when records are delivered twice.
ALTER TABLE job_messages
    ADD COLUMN size bigint NOT NULL DEFAULT 0,
    ADD COLUMN internal_date bigint NOT NULL DEFAULT 0,
    ADD COLUMN flags text[] NOT NULL DEFAULT '{}',
    ADD COLUMN st smallint NOT NULL DEFAULT 0,
    DROP COLUMN stored;

-- The job that first stored an attachment: its scans count for that job.
ALTER TABLE attachments ADD COLUMN job_id bigint;
CREATE INDEX attachments_job_status_idx ON attachments (job_id, scan_status)
    WHERE job_id IS NOT NULL;

-- folders.name is the display name (UTF-8); remote_name is the server's own
-- (IMAP modified UTF-7) name used in commands.
ALTER TABLE folders ADD COLUMN remote_name text;

-- When deferred attachment scans were queued (once per job).
ALTER TABLE sync_jobs ADD COLUMN av_queued_at timestamptz;
